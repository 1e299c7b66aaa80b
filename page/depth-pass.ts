/**
 * Live depth pass: the scene rendered with one override material that writes linear view-space Z
 * (distance along the camera's viewing axis, in scene units) into a float render target, read
 * back asynchronously and flipped to rows top-down: exactly the protocol's `zdepth` frame.
 *
 * Float targets need EXT_color_buffer_float (present in Chromium's SwiftShader, most GPUs). Without
 * it the pass packs (z - near) / (far - near) into RGBA8 with 24 bits and unpacks in JS.
 * Background stays cleared with alpha 0 and becomes +Infinity.
 */
import * as THREE from 'three';
import { depthFromFloatRGBA, depthFromPackedRGBA } from './frame-data.ts';
import { fitTarget, passTarget, readTarget, renderPass, type ReadbackMode } from './gpu.ts';

const vertexShader = /* glsl */ `
#include <common>
#include <batching_pars_vertex>
#include <morphtarget_pars_vertex>
#include <skinning_pars_vertex>
varying float vViewZ;
void main() {
  #include <batching_vertex>
  #include <skinbase_vertex>
  #include <morphinstance_vertex>
  #include <begin_vertex>
  #include <morphtarget_vertex>
  #include <skinning_vertex>
  #include <project_vertex>
  vViewZ = -mvPosition.z;
}
`;

const fragmentFloat = /* glsl */ `
varying float vViewZ;
void main() {
  gl_FragColor = vec4(vViewZ, 0.0, 0.0, 1.0);
}
`;

const fragmentPacked = /* glsl */ `
uniform float uNear;
uniform float uFar;
varying float vViewZ;
void main() {
  float t = clamp((vViewZ - uNear) / (uFar - uNear), 0.0, 0.99999994);
  vec3 digits = mod(floor(t * vec3(256.0, 65536.0, 16777216.0)), 256.0);
  gl_FragColor = vec4(digits / 255.0, 1.0);
}
`;

export type DepthEncoding = 'float32' | 'rgba8-packed';

export interface DepthCapture {
  /** Row 0 = top; linear view Z; background = +Infinity. */
  depth: Float32Array;
  width: number;
  height: number;
  encoding: DepthEncoding;
  readback: ReadbackMode;
}

export class DepthPass {
  readonly encoding: DepthEncoding;
  private readonly target: THREE.WebGLRenderTarget;
  private readonly material: THREE.ShaderMaterial;
  private near = 0.1;
  private far = 100;

  constructor(private readonly renderer: THREE.WebGLRenderer, width = 1, height = 1) {
    const floatOk = renderer.extensions.has('EXT_color_buffer_float');
    this.encoding = floatOk ? 'float32' : 'rgba8-packed';
    this.target = passTarget(width, height, floatOk ? THREE.FloatType : THREE.UnsignedByteType, 'depthcast.depth');
    this.material = new THREE.ShaderMaterial({
      name: 'depthcast.linearDepth',
      vertexShader,
      fragmentShader: floatOk ? fragmentFloat : fragmentPacked,
      uniforms: { uNear: { value: this.near }, uFar: { value: this.far } },
      side: THREE.DoubleSide,
      blending: THREE.NoBlending,
      depthTest: true,
      depthWrite: true,
    });
  }

  setSize(width: number, height: number): void {
    fitTarget(this.target, width, height);
  }

  /** Renders now (synchronously); `read()` then fetches the pixels. */
  render(scene: THREE.Scene, camera: THREE.PerspectiveCamera | THREE.OrthographicCamera): void {
    this.near = camera.near;
    this.far = camera.far;
    this.material.uniforms.uNear!.value = this.near;
    this.material.uniforms.uFar!.value = this.far;
    renderPass(this.renderer, scene, camera, this.target, () => {
      const old = scene.overrideMaterial;
      scene.overrideMaterial = this.material;
      return () => {
        scene.overrideMaterial = old;
      };
    });
  }

  async read(): Promise<DepthCapture> {
    const { width, height } = this.target;
    if (this.encoding === 'float32') {
      const buf = new Float32Array(width * height * 4);
      const readback = await readTarget(this.renderer, this.target, buf);
      return { depth: depthFromFloatRGBA(buf, width, height), width, height, encoding: this.encoding, readback };
    }
    const buf = new Uint8Array(width * height * 4);
    const readback = await readTarget(this.renderer, this.target, buf);
    return { depth: depthFromPackedRGBA(buf, width, height, this.near, this.far), width, height, encoding: this.encoding, readback };
  }

  dispose(): void {
    this.target.dispose();
    this.material.dispose();
  }
}
