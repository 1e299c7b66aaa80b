#!/usr/bin/env node
// Writes the small inputs examples/batch.yaml and examples/tiny.yaml read (they are committed;
// this script is how they were made and how to remake them):
//   node examples/make-inputs.mjs [--out DIR] [--no-blend]
// The depth files show one synthetic scene (a ground plane and boxes, seen from eye height), so
// the images follow recognisable geometry. scenes/shot.blend needs `blender` on PATH (or
// DEPTHCAST_BLENDER); --no-blend skips it.
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import * as THREE from 'three';
import { EXRExporter } from 'three/examples/jsm/exporters/EXRExporter.js';

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const outIndex = args.indexOf('--out');
const out = outIndex >= 0 ? resolve(args[outIndex + 1]) : here;
const withBlend = !args.includes('--no-blend');

/** float32 .npy, C order, shape (h, w). */
function npy(data, h, w) {
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${h}, ${w}), }`;
  header += ' '.repeat(63 - ((10 + header.length) % 64)) + '\n';
  const head = Buffer.alloc(10);
  Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0]).copy(head);
  head.writeUInt16LE(header.length, 8);
  return Buffer.concat([head, Buffer.from(header, 'latin1'), Buffer.from(data.buffer, data.byteOffset, data.byteLength)]);
}

/**
 * Linear camera Z of a ground plane 1.6 units below a level camera, with boxes standing on it
 * (`boxes`: {x0, x1 in [0,1] of the width, z: distance of the front face, height}), and the
 * id of what each pixel sees (0 = ground or sky). Sky is +Infinity.
 */
function scene(w, h, boxes) {
  const z = new Float32Array(w * h).fill(Infinity);
  const ids = new Uint16Array(w * h);
  const f = h * 1.2; // focal length in pixels
  for (let y = 0; y < h; y++) {
    const below = (y + 0.5 - h / 2) / f; // tan of the angle below the horizon
    for (let x = 0; x < w; x++) {
      const i = y * w + x;
      if (below > 0) z[i] = 1.6 / below;
      boxes.forEach((b, k) => {
        // The box's face spans from the ground (1.6 below the eye) to b.height above it.
        const top = (1.6 - b.height) / b.z;
        const bottom = 1.6 / b.z;
        if (x >= b.x0 * w && x < b.x1 * w && below >= top && below <= bottom && b.z < z[i]) {
          z[i] = b.z;
          ids[i] = k + 1;
        }
      });
    }
  }
  return { z, ids };
}

function write(path, bytes) {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, bytes);
  console.log(`wrote ${path} (${bytes.length} bytes)`);
}

const W = 64;
const H = 48;

// kitchen: a table and a counter; linear Z as float32 .npy.
const kitchen = scene(W, H, [{ x0: 0.3, x1: 0.7, z: 3, height: 0.8 }, { x0: 0, x1: 0.2, z: 5, height: 1 }]);
write(join(out, 'depth/kitchen.npy'), npy(kitchen.z, H, W));

// street: a car (id 1) and a house (id 2); Z as OpenEXR, their ids as a 16-bit PNG layout.
const street = scene(W, H, [{ x0: 0.15, x1: 0.45, z: 4, height: 1.4 }, { x0: 0.55, x1: 0.95, z: 9, height: 6 }]);
// A DataTexture's rows run bottom-up, the file's top-down: flip while filling RGBA.
const rgba = new Float32Array(W * H * 4);
for (let y = 0; y < H; y++) {
  for (let x = 0; x < W; x++) {
    const v = street.z[(H - 1 - y) * W + x];
    rgba.set([v, v, v, 1], (y * W + x) * 4);
  }
}
const texture = new THREE.DataTexture(rgba, W, H, THREE.RGBAFormat, THREE.FloatType);
write(join(out, 'depth/street.exr'), Buffer.from(await new EXRExporter().parse(texture, { type: THREE.FloatType, compression: 3 })));
const grey16 = (samples) => sharp(samples, { raw: { width: W, height: H, channels: 1 } })
  .toColourspace('grey16').png({ compressionLevel: 9 }).toBuffer();
write(join(out, 'layout/street_ids.png'), await grey16(street.ids));
// The init image: dusk sky above, cobbles below, the car red and the house brick.
const init = Buffer.alloc(W * H * 3);
for (let i = 0; i < W * H; i++) {
  const y = Math.floor(i / W);
  const colour = street.ids[i] === 1 ? [170, 30, 30] : street.ids[i] === 2 ? [140, 80, 60] : street.z[i] === Infinity ? [60, 50, 110 + y] : [90, 90, 90 - y];
  init.set(colour, i * 3);
}
write(join(out, 'init/street.png'), await sharp(init, { raw: { width: W, height: H, channels: 3 } }).png({ compressionLevel: 9 }).toBuffer());

// canyon: walls either side of a floor, as normalized depth (8-bit PNG, 255 = near).
const canyon = new Uint8Array(W * H);
for (let y = 0; y < H; y++) {
  for (let x = 0; x < W; x++) {
    const wall = Math.abs(x - W / 2) / (W / 2); // 0 in the middle, 1 at the sides
    canyon[y * W + x] = Math.round(255 * Math.min(1, 0.15 + 0.5 * wall ** 2 + 0.4 * (y / H)));
  }
}
write(join(out, 'depth/canyon.png'), await sharp(Buffer.from(canyon), { raw: { width: W, height: H, channels: 1 } }).png({ compressionLevel: 9 }).toBuffer());

// box (examples/tiny.yaml): a floor receding to Z 6 at row 12, sky above, a box at Z 1.5.
const box = new Float32Array(64 * 64);
for (let y = 0; y < 64; y++) {
  for (let x = 0; x < 64; x++) box[y * 64 + x] = y >= 28 && y <= 51 && x >= 20 && x <= 39 ? 1.5 : y < 12 ? Infinity : 6 - (y - 12) / 13;
}
write(join(out, 'depth/box.npy'), npy(box, 64, 64));

if (withBlend) {
  // shot: two cameras looking at a cube on a plane; CamB moves between frames 1 and 48.
  const script = `
import bpy
bpy.ops.wm.read_factory_settings(use_empty=True)
scene = bpy.context.scene
bpy.ops.mesh.primitive_plane_add(size=20)
bpy.ops.mesh.primitive_cube_add(size=1.5, location=(0, 0, 0.75))
for name, loc, rot in (("CamA", (0, -7, 2), (1.35, 0, 0)), ("CamB", (5, -5, 2.5), (1.3, 0, 0.785))):
    cam = bpy.data.objects.new(name, bpy.data.cameras.new(name))
    cam.location = loc
    cam.rotation_euler = rot
    cam.data.clip_start, cam.data.clip_end = 0.5, 40
    scene.collection.objects.link(cam)
camb = bpy.data.objects["CamB"]
camb.keyframe_insert("location", frame=1)
camb.location = (6, -3, 2.5)
camb.keyframe_insert("location", frame=48)
scene.camera = bpy.data.objects["CamA"]
scene.frame_start, scene.frame_end = 1, 48
scene.render.resolution_x, scene.render.resolution_y = 96, 64
bpy.ops.wm.save_as_mainfile(filepath=${JSON.stringify(join(out, 'scenes/shot.blend'))}, compress=True)
`;
  mkdirSync(join(out, 'scenes'), { recursive: true });
  const blender = process.env.DEPTHCAST_BLENDER || 'blender';
  const run = spawnSync(blender, ['-b', '--factory-startup', '--python-expr', script], { encoding: 'utf8', timeout: 120_000 });
  if (run.status !== 0) {
    console.error(`${blender} could not write scenes/shot.blend (${run.error?.message ?? `exit ${run.status}`}):\n${run.stderr?.slice(-2000) ?? ''}`);
    process.exit(1);
  }
  console.log(`wrote ${join(out, 'scenes/shot.blend')}`);
}
