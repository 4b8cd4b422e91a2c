"""The route policy: compiling a config, selecting a route, the decision phases
(engine.py) and the denials they answer with.
"""
