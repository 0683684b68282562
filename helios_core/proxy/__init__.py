"""helios proxy: a reverse proxy with balancing, health checks, circuit breaking and live config.

Config and policy (pure logic, time passed in as ``now``):

- ``model``     frozen dataclasses (ProxyConfig, Route, Pool, Backend, ...), ``parse_config``, ``to_dict``
- ``loader``    ``load_file(path)``: YAML with file:line:key errors
- ``router``    ``Router(routes).match(host, path, method) -> Match | None``
- ``state``     ``PoolState`` / ``BackendState``: per-process runtime state of a pool and its backends
- ``balancers`` round_robin, least_conn, weighted (nginx smooth), p2c
- ``breaker``   per-backend circuit breaker
- ``health``    rise/fall, outlier ejection, and the asyncio ``HealthChecker``
- ``retry``     ``RetryBudget``

Nothing heavy is imported here so that ``import helios_core.proxy.model`` stays cheap.
"""
