/**
 * Object-id pass for layout-aware prompting: every mesh drawn with a flat, unlit colour that
 * encodes its id (R = low byte, G = high byte) into an RGBA8 target, read back, rows flipped →
 * a u16 index map, 0 = background. Same camera and culling as the depth pass (double-sided),
 * so the two maps line up pixel for pixel.
 */
import * as THREE from 'three';
import { idToColor, idsFromRGBA8 } from './frame-data.ts';
import { fitTarget, passTarget, readTarget, renderPass, type ReadbackMode } from './gpu.ts';

export interface IdCapture {
  ids: Uint16Array;
  width: number;
  height: number;
  readback: ReadbackMode;
}

export class IdPass {
  private readonly target: THREE.WebGLRenderTarget;
  private readonly materials = new Map<number, THREE.MeshBasicMaterial>();

  constructor(private readonly renderer: THREE.WebGLRenderer, width = 1, height = 1) {
    this.target = passTarget(width, height, THREE.UnsignedByteType, 'depthcast.ids');
  }

  setSize(width: number, height: number): void {
    fitTarget(this.target, width, height);
  }

  private materialFor(id: number): THREE.MeshBasicMaterial {
    let m = this.materials.get(id);
    if (!m) {
      const [r, g, b] = idToColor(id);
      // Linear in, linear out (render targets are not colour-converted), no tone mapping, no fog:
      // the byte read back is exactly round(255 · channel).
      m = new THREE.MeshBasicMaterial({ color: new THREE.Color(r, g, b), side: THREE.DoubleSide, fog: false, toneMapped: false, blending: THREE.NoBlending });
      m.name = `depthcast.id.${id}`;
      this.materials.set(id, m);
    }
    return m;
  }

  /** Renders meshes with their `idOf` id (meshes without one draw as 0 = background but still occlude). */
  render(scene: THREE.Scene, camera: THREE.Camera, idOf: (mesh: THREE.Mesh) => number): void {
    renderPass(this.renderer, scene, camera, this.target, () => {
      const swapped: [THREE.Mesh, THREE.Material | THREE.Material[]][] = [];
      scene.traverse((o) => {
        const mesh = o as THREE.Mesh;
        if (!mesh.isMesh) return;
        swapped.push([mesh, mesh.material]);
        mesh.material = this.materialFor(Math.max(0, Math.min(65535, idOf(mesh) | 0)));
      });
      return () => {
        for (const [mesh, material] of swapped) mesh.material = material;
      };
    });
  }

  async read(): Promise<IdCapture> {
    const { width, height } = this.target;
    const buf = new Uint8Array(width * height * 4);
    const readback = await readTarget(this.renderer, this.target, buf);
    return { ids: idsFromRGBA8(buf, width, height), width, height, readback };
  }

  dispose(): void {
    this.target.dispose();
    for (const m of this.materials.values()) m.dispose();
    this.materials.clear();
  }
}
