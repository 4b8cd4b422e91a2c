"""The doors Envoy (or NGINX, Traefik) calls: each turns its wire request into the
request document and the pipeline's answer into its wire answer, in one place.
"""
