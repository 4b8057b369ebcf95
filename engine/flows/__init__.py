"""The flows slice: routines of Task scripts run as flows."""
