"""bpy-free core of the depthcast add-on: WebSocket client, binary framing, depth conversion,
layout and message building. Everything here runs under plain ``python3`` so it is unit-tested
outside Blender (``python3 -m unittest discover -s blender-addon/tests -p 'test_*.py'``)."""
