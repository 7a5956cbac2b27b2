"""The one home of JSON text and JSON-Schema analysis: everyone who scans JSON text or walks a
schema imports it (the grammar-mask glue, the schema reward, the tool-call parser, the spec).

Ground floor: it imports nothing from deal-chains but ``errors``, and never torch,
transformers or the grammar engine, so ``rewards`` can use it.

- ``lexer``: one incremental JSON lexer (depth, strings and escapes, keys per object,
  complete or where it broke), resumable per token;
- ``schema_walk``: the structure of a schema (which keys hold subschemas, maps, data);
- ``schema_shape``: size, depth, local refs, "no finite instance";
- ``schema_rewrite``: ``oneOf`` as an equivalent ``anyOf``, caps on unbounded parts;
- ``schema_sound``: narrowing to what the grammar engine and ``jsonschema`` agree on;
- ``validate``: the validator a user's own check would use, with RE2 patterns.
"""
