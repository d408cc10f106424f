"""
The boxsync client: keeps a local folder identical to the box on a server.

One module per job; for the local folder: C{ignore} (which paths are not
synced), C{state} (what each file was when last in sync), C{scanner} (what
the folder holds now) and C{watcher} (hints that something in it changed).
"""
