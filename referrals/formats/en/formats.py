"""The one date style of the portal, for the admin too (FORMAT_MODULE_PATH): "2 Dec 2026"."""
DATE_FORMAT = "j M Y"
DATETIME_FORMAT = "j M Y, H:i"
SHORT_DATE_FORMAT = "j M Y"
SHORT_DATETIME_FORMAT = "j M Y, H:i"
NUMBER_GROUPING = 3
