"""The built-in tasks the supernets are trained and scored on (each registers in
:data:`nas.TASKS` when imported)."""
