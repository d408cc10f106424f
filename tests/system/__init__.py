"""
Tier 3: real processes (twistd boxsync, boxsync-client), real services and injected faults.
"""
