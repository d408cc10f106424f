from twisted.application.service import ServiceMaker

boxsync = ServiceMaker(
    "boxsync",
    "boxsync.server.tap",
    "A boxsync server: a box of files kept in sync with many clients.",
    "boxsync",
)
