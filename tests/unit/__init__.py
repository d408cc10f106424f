"""
Tier 1: pure logic and codecs, on real files and SQLite at most: no server, no socket, no process.
"""
