"""Rate limits decided inside the Check: one call per request instead of two.

A policy's `rate_limits:` section names envoyproxy/ratelimit YAML rules (the file
or directory ratelimit-service loads) and limit sets whose descriptors are built
by actions shaped like Envoy's route `rate_limits` actions, plus identity actions.
Sets run at one of two points of the pipeline: `before_authn` (by client address:
a flood of forged tokens costs no signature check) and `after_authz` (by identity
or plan). Counting is ratelimit_service's engine on the same stores.

- `config`: the YAML models; `actions`: descriptor actions (a registry);
- `compiled`: sets compiled per route; `stage`: running a stage against the engine.
"""
