/**
 * Shared plumbing of the offscreen passes (depth, object ids): render into a target without
 * disturbing the on-screen render (renderer state saved and restored, as three's BokehPass does),
 * and read the target back, asynchronously when the renderer can.
 */
import * as THREE from 'three';

/** Layer of on-screen-only helpers (selection box, grid): the pass camera does not see it. */
export const HELPER_LAYER = 1;

export type ReadbackMode = 'async' | 'sync';

/**
 * An offscreen pass's target: RGBA with a depth buffer, no filtering, mipmaps or multisampling,
 * so every texel read back is exactly the value the pass wrote for that pixel.
 */
export function passTarget(width: number, height: number, type: THREE.TextureDataType, name: string): THREE.WebGLRenderTarget {
  const target = new THREE.WebGLRenderTarget(width, height, {
    type,
    format: THREE.RGBAFormat,
    minFilter: THREE.NearestFilter,
    magFilter: THREE.NearestFilter,
    generateMipmaps: false,
    depthBuffer: true,
    samples: 0,
  });
  target.texture.name = name;
  return target;
}

/** Resizes a pass target only when the size changed (setSize reallocates). */
export function fitTarget(target: THREE.WebGLRenderTarget, width: number, height: number): void {
  if (target.width !== width || target.height !== height) target.setSize(width, height);
}

/**
 * Renders `scene` into `target` with `prepare()` applied and undone around it. Everything the
 * pass touches (render target, clear colour/alpha, autoClear, background, fog, override
 * material, shadow auto-update, non-mesh visibility) is put back, even when rendering throws.
 */
export function renderPass(
  renderer: THREE.WebGLRenderer,
  scene: THREE.Scene,
  camera: THREE.Camera,
  target: THREE.WebGLRenderTarget,
  prepare: () => () => void,
): void {
  const oldTarget = renderer.getRenderTarget();
  const oldClearColor = renderer.getClearColor(new THREE.Color());
  const oldClearAlpha = renderer.getClearAlpha();
  const oldAutoClear = renderer.autoClear;
  const oldShadowAuto = renderer.shadowMap.autoUpdate;
  const oldBackground = scene.background;
  const oldFog = scene.fog;
  const hidden: THREE.Object3D[] = [];
  let undo: (() => void) | undefined;
  try {
    renderer.autoClear = false;
    renderer.shadowMap.autoUpdate = false;
    scene.background = null;
    scene.fog = null;
    // Lines, points and sprites have no surface to give depth or an id; the passes skip them.
    scene.traverseVisible((o) => {
      if ((o as THREE.Line).isLine || (o as THREE.Points).isPoints || (o as THREE.Sprite).isSprite) hidden.push(o);
    });
    for (const o of hidden) o.visible = false;
    undo = prepare();
    renderer.setRenderTarget(target);
    renderer.setClearColor(0x000000, 0);
    renderer.clear(true, true, true);
    renderer.render(scene, camera);
  } finally {
    undo?.();
    for (const o of hidden) o.visible = true;
    scene.background = oldBackground;
    scene.fog = oldFog;
    renderer.setRenderTarget(oldTarget);
    renderer.setClearColor(oldClearColor, oldClearAlpha);
    renderer.autoClear = oldAutoClear;
    renderer.shadowMap.autoUpdate = oldShadowAuto;
  }
}

/** Reads the whole target into `buffer` (rows bottom-up, as GL gives them). */
export async function readTarget<T extends Float32Array | Uint8Array>(
  renderer: THREE.WebGLRenderer,
  target: THREE.WebGLRenderTarget,
  buffer: T,
): Promise<ReadbackMode> {
  const r = renderer as THREE.WebGLRenderer & {
    readRenderTargetPixelsAsync?: (t: THREE.WebGLRenderTarget, x: number, y: number, w: number, h: number, b: T) => Promise<T>;
  };
  if (typeof r.readRenderTargetPixelsAsync === 'function') {
    try {
      await r.readRenderTargetPixelsAsync(target, 0, 0, target.width, target.height, buffer);
      return 'async';
    } catch {
      // e.g. no fence sync on this GL: fall through to the blocking read.
    }
  }
  renderer.readRenderTargetPixels(target, 0, 0, target.width, target.height, buffer);
  return 'sync';
}

/**
 * A pass camera's pose and pinhole intrinsics as the protocol's `pose` motion takes them
 * (docs/protocol.md#motion): camera-to-world row-major, looking down −Z with +Y up (three.js and
 * Blender agree), and fx, fy, cx, cy in pixels of a width×height frame. Undefined for cameras
 * the pinhole model does not describe: orthographic, a film offset, a view offset.
 */
export function cameraMotionPose(cam: THREE.PerspectiveCamera | THREE.OrthographicCamera, width: number, height: number): { pose: number[]; intrinsics: { fx: number; fy: number; cx: number; cy: number } } | undefined {
  const p = cam as THREE.PerspectiveCamera;
  if (!p.isPerspectiveCamera || p.filmOffset !== 0 || (p.view && p.view.enabled)) return undefined;
  const f = height / 2 / Math.tan(THREE.MathUtils.degToRad(p.getEffectiveFOV()) / 2);
  return { pose: cam.matrixWorld.clone().transpose().toArray(), intrinsics: { fx: f, fy: f, cx: width / 2, cy: height / 2 } };
}

/**
 * The camera the passes render with: the view camera's pose and lens with the frame's aspect
 * ratio, seeing only layer 0 (no helpers).
 */
export function passCamera(view: THREE.PerspectiveCamera | THREE.OrthographicCamera, aspect: number): THREE.PerspectiveCamera | THREE.OrthographicCamera {
  view.updateMatrixWorld();
  const cam = view.clone();
  view.matrixWorld.decompose(cam.position, cam.quaternion, cam.scale);
  if ((cam as THREE.PerspectiveCamera).isPerspectiveCamera) {
    (cam as THREE.PerspectiveCamera).aspect = aspect;
  } else {
    const o = cam as THREE.OrthographicCamera;
    const cy = (o.top + o.bottom) / 2;
    const cx = (o.left + o.right) / 2;
    const halfH = (o.top - o.bottom) / 2;
    o.left = cx - halfH * aspect;
    o.right = cx + halfH * aspect;
    o.top = cy + halfH;
    o.bottom = cy - halfH;
  }
  cam.layers.set(0);
  cam.updateProjectionMatrix();
  cam.updateMatrixWorld(true);
  return cam;
}
