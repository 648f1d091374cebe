"""``wardgate bench``: what putting wardgate in the data path costs, measured on the operator's machine.

Separate processes for the mock upstream (`upstream`), the load generator (`loadgen`), the byte relay
floor (`relay`) and the gateway under test; `fleet` starts them, `runner` measures, `report` formats,
`cli` registers the subcommand. Imports `gateway`, `storage` and `parsers`; nothing imports it but the CLI.
"""
