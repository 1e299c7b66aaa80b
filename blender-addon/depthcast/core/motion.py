"""Motion to the previous frame, bpy-free: Blender's Vector pass as depthcast's flow planes, and
the camera's pinhole intrinsics. Conventions (docs/protocol.md#motion, src/motion/flow.ts): flow
is 2 planes (x then y) of pixel offsets from each pixel of the current frame to where its
surface was in the previous frame, rows top to bottom, y down. The Vector pass (Cycles, motion
blur off) is RGBA per pixel, bottom row first; (R, G) is that offset with y up."""
import array


def flow_from_vector_pass(pixels, width, height):
    """Flat RGBA floats, bottom row first -> float32 array of 2*width*height (dx plane, dy plane)."""
    if len(pixels) != 4 * width * height:
        raise ValueError("vector pass holds %d values, expected %d (%dx%dx4)" % (len(pixels), 4 * width * height, width, height))
    plane = width * height
    out = array.array("f", bytes(8 * plane))
    stride = 4 * width
    for row in range(height):
        src = (height - 1 - row) * stride
        out[row * width:(row + 1) * width] = array.array("f", pixels[src:src + stride:4])
        out[plane + row * width:plane + (row + 1) * width] = array.array("f", (-v for v in pixels[src + 1:src + stride:4]))
    return out


def pinhole_intrinsics(lens, sensor_width, sensor_height, sensor_fit, width, height):
    """fx, fy, cx, cy in pixels of a width x height image of a perspective camera without shift
    (square pixels). The sensor size applies to the width (HORIZONTAL, or AUTO on a landscape
    image) or to the height (VERTICAL: sensor_height; AUTO portrait: sensor_width)."""
    if sensor_fit == "VERTICAL":
        f = lens / sensor_height * height
    elif sensor_fit == "HORIZONTAL" or width >= height:
        f = lens / sensor_width * width
    else:
        f = lens / sensor_width * height
    return {"fx": f, "fy": f, "cx": width / 2.0, "cy": height / 2.0}
