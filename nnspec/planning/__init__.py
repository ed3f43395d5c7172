"""Property x inputs -> Plan of Tasks (backend, options, budget); ``explain`` renders a plan."""
