"""
Tier 2: the real client against the real server resource in one process: in memory (treq's in-memory agent, a Clock) where it can be, over 127.0.0.1 where a socket is the point.
"""
