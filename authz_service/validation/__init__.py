"""Request validation after authorization: headers, OpenAPI parameters, body
framing, bounded JSON parsing, JSON Schema; RFC 9457 problems.
"""
