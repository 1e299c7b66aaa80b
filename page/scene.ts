/**
 * The 3D view: renderer, a demo scene (a few primitives on a ground plane under a camera), orbit
 * controls, glTF/GLB drop with a picker for the cameras the file carries, object picking, and
 * stable per-mesh ids for the id pass.
 */
import * as THREE from 'three';
import { OrbitControls } from 'three/examples/jsm/controls/OrbitControls.js';
import { GLTFLoader } from 'three/examples/jsm/loaders/GLTFLoader.js';
import { HELPER_LAYER } from './gpu.ts';

export type ViewCamera = THREE.PerspectiveCamera | THREE.OrthographicCamera;

export interface CameraChoice {
  label: string;
  /** undefined = the free orbit camera. */
  source?: ViewCamera;
}

export interface SceneObject {
  id: number;
  mesh: THREE.Mesh;
  label: string;
}

/** Where a user's prompt for an object lives (kept with the mesh, so it survives re-indexing). */
export const PROMPT_KEY = 'depthcastPrompt';
export const WEIGHT_KEY = 'depthcastWeight';

export function objectPrompt(mesh: THREE.Object3D): string | undefined {
  const p = mesh.userData[PROMPT_KEY];
  return typeof p === 'string' && p.trim() ? p : undefined;
}

export function objectWeight(mesh: THREE.Object3D): number {
  const w = mesh.userData[WEIGHT_KEY];
  return typeof w === 'number' && Number.isFinite(w) ? w : 1;
}

export class SceneView {
  readonly renderer: THREE.WebGLRenderer;
  readonly scene = new THREE.Scene();
  camera: ViewCamera;
  controls: OrbitControls;
  cameras: CameraChoice[] = [{ label: 'Orbit camera' }];
  objects: SceneObject[] = [];
  sceneName = 'demo scene';
  selected: SceneObject | undefined;
  /** Index into `cameras` of the camera in use. */
  cameraIndex = 0;

  private content = new THREE.Group();
  private readonly orbitCamera: THREE.PerspectiveCamera;
  private readonly selectionBox = new THREE.BoxHelper(new THREE.Object3D(), 0xffcc33);
  private readonly raycaster = new THREE.Raycaster();
  private readonly listeners = new Set<(what: string) => void>();
  private width = 1;
  private height = 1;
  private needsRender = true;

  constructor(readonly container: HTMLElement) {
    this.renderer = new THREE.WebGLRenderer({ antialias: true, powerPreference: 'high-performance' });
    this.renderer.setPixelRatio(Math.min(window.devicePixelRatio || 1, 2));
    this.renderer.outputColorSpace = THREE.SRGBColorSpace;
    this.renderer.domElement.classList.add('view-canvas');
    container.prepend(this.renderer.domElement);

    this.scene.background = new THREE.Color(0x1d2127);
    const hemi = new THREE.HemisphereLight(0xdde6ff, 0x3a3026, 1.4);
    const sun = new THREE.DirectionalLight(0xffffff, 2.2);
    sun.position.set(5, 9, 4);
    this.scene.add(hemi, sun, this.content);

    this.selectionBox.visible = false;
    this.selectionBox.layers.set(HELPER_LAYER);
    this.scene.add(this.selectionBox);

    this.orbitCamera = new THREE.PerspectiveCamera(45, 1, 0.5, 60);
    this.orbitCamera.layers.enable(HELPER_LAYER);
    this.camera = this.orbitCamera;
    this.controls = this.makeControls(this.camera, new THREE.Vector3(0, 0.6, 0));
    this.loadDemo();

    new ResizeObserver(() => this.resize()).observe(container);
    this.resize();
    this.installPicking();
  }

  /** Called with 'camera' | 'scene' | 'objects' | 'selection' whenever something the frame depends on changes. */
  onChange(fn: (what: string) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private emit(what: string): void {
    this.needsRender = true;
    for (const fn of this.listeners) fn(what);
  }

  get aspect(): number {
    return this.width / this.height;
  }

  private makeControls(camera: ViewCamera, target: THREE.Vector3): OrbitControls {
    const c = new OrbitControls(camera, this.renderer.domElement);
    c.target.copy(target);
    c.enableDamping = true;
    c.dampingFactor = 0.12;
    c.addEventListener('change', () => this.emit('camera'));
    c.update();
    return c;
  }

  private resize(): void {
    const w = Math.max(1, this.container.clientWidth);
    const h = Math.max(1, this.container.clientHeight);
    if (w === this.width && h === this.height) return;
    this.width = w;
    this.height = h;
    this.renderer.setSize(w, h, false);
    this.applyAspect(this.camera);
    this.emit('camera');
  }

  private applyAspect(cam: ViewCamera): void {
    if ((cam as THREE.PerspectiveCamera).isPerspectiveCamera) {
      (cam as THREE.PerspectiveCamera).aspect = this.aspect;
    } else {
      const o = cam as THREE.OrthographicCamera;
      const halfH = (o.top - o.bottom) / 2;
      const cx = (o.left + o.right) / 2;
      o.left = cx - halfH * this.aspect;
      o.right = cx + halfH * this.aspect;
    }
    cam.updateProjectionMatrix();
  }

  /** Once per animation frame: advances damping and redraws only when something changed. */
  frame(): void {
    this.controls.update(); // emits 'change' (→ needsRender) while the camera still moves
    if (this.needsRender) this.render();
  }

  render(): void {
    this.needsRender = false;
    if (this.selected) this.selectionBox.update();
    this.renderer.render(this.scene, this.camera);
  }

  // ---- content ----

  private setContent(root: THREE.Object3D, name: string, cameras: ViewCamera[]): void {
    this.scene.remove(this.content);
    disposeTree(this.content);
    this.content = new THREE.Group();
    this.content.add(root);
    this.scene.add(this.content);
    this.sceneName = name;
    this.cameras = [{ label: 'Orbit camera' }, ...cameras.map((c, i) => ({ label: c.name || `camera ${i + 1}`, source: c }))];
    this.select(undefined);
    this.reindex();
    this.useCamera(0);
    this.emit('scene');
  }

  /** A few primitives on a ground plane; the orbit camera looks at them from above the front. */
  loadDemo(): void {
    const root = new THREE.Group();
    root.name = 'demo';
    const mat = (color: number) => new THREE.MeshStandardMaterial({ color, roughness: 0.6, metalness: 0.05 });
    const ground = new THREE.Mesh(new THREE.PlaneGeometry(16, 16), mat(0x7b8591));
    ground.name = 'ground';
    ground.rotation.x = -Math.PI / 2;
    const box = new THREE.Mesh(new THREE.BoxGeometry(1.4, 1.4, 1.4), mat(0xd9673b));
    box.name = 'box';
    box.position.set(-1.3, 0.7, 0.6);
    box.rotation.y = 0.45;
    const sphere = new THREE.Mesh(new THREE.SphereGeometry(0.8, 48, 24), mat(0x3b8fd9));
    sphere.name = 'sphere';
    sphere.position.set(1.4, 0.8, 0.2);
    const cone = new THREE.Mesh(new THREE.ConeGeometry(0.7, 1.8, 40), mat(0x5fbf6a));
    cone.name = 'cone';
    cone.position.set(0.1, 0.9, -1.8);
    const knot = new THREE.Mesh(new THREE.TorusKnotGeometry(0.35, 0.12, 96, 12), mat(0xc9b43a));
    knot.name = 'torus knot';
    knot.position.set(2.6, 0.55, -2.2);
    root.add(ground, box, sphere, cone, knot);
    this.setContent(root, 'demo scene', []);
    this.orbitCamera.fov = 45;
    this.orbitCamera.near = 0.5;
    this.orbitCamera.far = 60;
    this.orbitCamera.position.set(0.8, 4.2, 8.5);
    this.orbitCamera.updateProjectionMatrix();
    this.controls.target.set(0.2, 0.5, -0.2);
    this.controls.maxDistance = 30;
    this.controls.update();
    this.emit('camera');
  }

  /** Loads a dropped .glb, or a .gltf together with its .bin and texture files. */
  async loadFiles(files: File[]): Promise<void> {
    const main = files.find((f) => /\.(glb|gltf)$/i.test(f.name));
    if (!main) throw new Error(`no .glb or .gltf among the dropped files (${files.map((f) => f.name).join(', ') || 'none'})`);
    const urls = new Map<string, string>();
    for (const f of files) urls.set(f.name, URL.createObjectURL(f));
    const manager = new THREE.LoadingManager();
    manager.setURLModifier((url) => {
      const name = decodeURIComponent(url.split(/[\\/]/).pop() ?? url);
      return urls.get(name) ?? url;
    });
    try {
      const gltf = await new GLTFLoader(manager).loadAsync(urls.get(main.name)!);
      const root = gltf.scene ?? gltf.scenes[0];
      if (!root) throw new Error(`${main.name} has no scene`);
      root.updateMatrixWorld(true);
      const cams: ViewCamera[] = [];
      root.traverse((o) => {
        const c = o as ViewCamera;
        if ((c as THREE.PerspectiveCamera).isPerspectiveCamera || (c as THREE.OrthographicCamera).isOrthographicCamera) cams.push(c);
      });
      this.setContent(root, main.name, cams);
      this.frameContent();
      if (cams.length) this.useCamera(1);
    } finally {
      for (const u of urls.values()) URL.revokeObjectURL(u);
    }
  }

  /** Points the orbit camera at the content's bounds and fits near/far around them. */
  frameContent(): void {
    const box = new THREE.Box3().setFromObject(this.content);
    if (box.isEmpty()) return;
    const sphere = box.getBoundingSphere(new THREE.Sphere());
    const r = Math.max(sphere.radius, 1e-3);
    const cam = this.orbitCamera;
    const dist = (r / Math.sin(THREE.MathUtils.degToRad(cam.fov) / 2)) * 1.1;
    const dir = new THREE.Vector3(0.35, 0.45, 1).normalize();
    cam.position.copy(sphere.center).addScaledVector(dir, dist);
    cam.near = Math.max(r * 0.01, 1e-3);
    cam.far = dist + r * 12;
    cam.updateProjectionMatrix();
    if (this.camera === cam) {
      this.controls.target.copy(sphere.center);
      this.controls.maxDistance = dist * 8;
      this.controls.update();
    }
    this.emit('camera');
  }

  /** 0 = orbit camera; others: a glTF camera, copied (with its world pose) into a free camera you can orbit from. */
  useCamera(index: number): void {
    const choice = this.cameras[index];
    if (!choice) return;
    let cam: ViewCamera;
    let target: THREE.Vector3;
    if (!choice.source) {
      cam = this.orbitCamera;
      target = this.camera === cam ? this.controls.target.clone() : new THREE.Vector3(0, 0.5, 0);
    } else {
      const src = choice.source;
      src.updateMatrixWorld(true);
      cam = src.clone();
      src.matrixWorld.decompose(cam.position, cam.quaternion, cam.scale);
      cam.scale.set(1, 1, 1);
      cam.layers.enable(HELPER_LAYER);
      const forward = new THREE.Vector3(0, 0, -1).applyQuaternion(cam.quaternion);
      const center = new THREE.Box3().setFromObject(this.content).getCenter(new THREE.Vector3());
      const d = Math.max(center.clone().sub(cam.position).dot(forward), cam.near * 10, 0.1);
      target = cam.position.clone().addScaledVector(forward, d);
    }
    this.applyAspect(cam);
    this.controls.dispose();
    this.camera = cam;
    this.cameraIndex = index;
    this.controls = this.makeControls(cam, target);
    this.emit('camera');
  }

  /** Assigns ids 1..N to the content's meshes in traversal order. */
  reindex(): void {
    this.objects = [];
    let id = 0;
    this.content.traverse((o) => {
      const mesh = o as THREE.Mesh;
      if (!mesh.isMesh) return;
      id++;
      if (id > 65535) return;
      mesh.userData.depthcastId = id;
      const label = mesh.name || mesh.parent?.name || `mesh ${id}`;
      this.objects.push({ id, mesh, label });
    });
    this.emit('objects');
  }

  idOf = (mesh: THREE.Mesh): number => {
    const id = mesh.userData.depthcastId;
    return typeof id === 'number' && this.objects[id - 1]?.mesh === mesh ? id : 0;
  };

  // ---- picking ----

  private installPicking(): void {
    const el = this.renderer.domElement;
    let down: { x: number; y: number } | undefined;
    el.addEventListener('pointerdown', (e) => {
      down = { x: e.clientX, y: e.clientY };
    });
    el.addEventListener('pointerup', (e) => {
      if (!down || Math.hypot(e.clientX - down.x, e.clientY - down.y) > 4) return;
      down = undefined;
      const rect = el.getBoundingClientRect();
      this.select(this.pick(((e.clientX - rect.left) / rect.width) * 2 - 1, -((e.clientY - rect.top) / rect.height) * 2 + 1));
    });
  }

  /** The object under normalised device coordinates (x, y), if any. */
  pick(ndcX: number, ndcY: number): SceneObject | undefined {
    this.raycaster.setFromCamera(new THREE.Vector2(ndcX, ndcY), this.camera);
    this.raycaster.layers.set(0);
    const hits = this.raycaster.intersectObject(this.content, true);
    for (const h of hits) {
      const o = this.objects.find((s) => s.mesh === h.object);
      if (o && o.mesh.visible) return o;
    }
    return undefined;
  }

  select(obj: SceneObject | undefined): void {
    this.selected = obj;
    if (obj) {
      this.selectionBox.setFromObject(obj.mesh);
      this.selectionBox.visible = true;
    } else this.selectionBox.visible = false;
    this.emit('selection');
  }

  setPrompt(obj: SceneObject, prompt: string, weight?: number): void {
    if (prompt.trim()) obj.mesh.userData[PROMPT_KEY] = prompt;
    else delete obj.mesh.userData[PROMPT_KEY];
    if (weight !== undefined) obj.mesh.userData[WEIGHT_KEY] = weight;
    this.emit('objects');
  }
}

function disposeTree(root: THREE.Object3D): void {
  root.traverse((o) => {
    const mesh = o as THREE.Mesh;
    if (!mesh.isMesh) return;
    mesh.geometry?.dispose();
    const mats = Array.isArray(mesh.material) ? mesh.material : [mesh.material];
    for (const m of mats) {
      if (!m) continue;
      for (const v of Object.values(m)) if (v && (v as THREE.Texture).isTexture) (v as THREE.Texture).dispose();
      m.dispose();
    }
  });
}
