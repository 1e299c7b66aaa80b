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


def flow_from_channels(dx, dy_up):
    """The Vector pass's R and G channels already read top-down (core.exr) -> the same flow
    planes as :func:`flow_from_vector_pass`: dx as it is, y negated (Blender's y is up)."""
    if len(dx) != len(dy_up):
        raise ValueError("Vector channels differ in length: %d and %d" % (len(dx), len(dy_up)))
    out = array.array("f", dx)
    out.extend(-v for v in dy_up)
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


def attach_motion(header, payloads, frame, flow, pose, intrinsics, previous):
    """Adds the motion to the frame before to a frame message built by messages.build_frame.

    ``previous`` is ``(job_id, frame, pose)`` of the frame sent before on the same stream, or
    None. The Vector pass describes the motion to frame - 1, so it goes when that is the frame
    before; otherwise the two camera poses (exact for static scenes) when the intrinsics are
    known. Returns the kind attached ("flow", "pose") or None."""
    if previous is None:
        return None
    prev_job, prev_frame, prev_pose = previous
    width, height = header["depth"]["width"], header["depth"]["height"]
    if flow is not None and prev_frame == frame - 1:
        data = array.array("f", flow)
        if len(data) != 2 * width * height:
            raise ValueError("flow holds %d values, expected 2x%dx%d" % (len(data), width, height))
        if array.array("f", [1.0]).tobytes() != b"\x00\x00\x80?":
            data.byteswap()
        header["motion"] = {"kind": "flow", "dtype": "f32", "width": width, "height": height,
                            "byteLength": 4 * len(data), "previousJobId": prev_job}
        payloads.append(data.tobytes())
        return "flow"
    if intrinsics is not None and pose is not None and prev_pose is not None:
        header["motion"] = {"kind": "pose", "intrinsics": dict(intrinsics), "pose": list(pose),
                            "previousPose": list(prev_pose), "previousJobId": prev_job}
        return "pose"
    return None


def warp_summary(reports):
    """``reports``: {frame: the result's ``consistency``} -> the sequence's score (docs/batch.md):
    every scored pair, the mean, the worst pair, and the frames that fell back with why."""
    pairs = [dict(frame=f, **r["score"]) for f, r in sorted(reports.items()) if r and r.get("score")]
    fallbacks = [{"frame": f, "reason": r["fallback"]} for f, r in sorted(reports.items()) if r and r.get("fallback")]
    mean = sum(p["error"] for p in pairs) / len(pairs) if pairs else None
    worst = max(pairs, key=lambda p: p["error"]) if pairs else None
    return {"pairs": pairs, "meanError": mean, "worst": worst, "fallbacks": fallbacks}
