/**
 * A real WebGPU adapter on a machine without a GPU: SwiftShader, the CPU Vulkan driver that
 * Debian's chromium package ships (/usr/lib/chromium). onnxruntime-node's WebGPU EP (Dawn on
 * Vulkan) takes it as an adapter, so the WebGPU provider's kernels, its device memory and the
 * GPU-resident feeds run for real here; only the speed is not a GPU's. Mesa's lavapipe, the other
 * CPU Vulkan driver here, lacks a feature Dawn requires.
 *
 * Call before the process opens its first WebGPU session: the Vulkan loader reads the variables
 * once. Vitest runs each test file in its own process (pool: forks), so this stays in that file.
 */
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const SWIFTSHADER_ICD = '/usr/lib/chromium/vk_swiftshader_icd.json';

/** Points Vulkan at SwiftShader; false when it is not installed (apt: chromium). */
export function useSoftwareWebgpu(): boolean {
  if (!existsSync(SWIFTSHADER_ICD)) return false;
  process.env.VK_ICD_FILENAMES = SWIFTSHADER_ICD;
  // Dawn's Vulkan backend asks for it (Wayland/X sockets) and logs an error without one.
  process.env.XDG_RUNTIME_DIR ??= mkdtempSync(join(tmpdir(), 'depthcast-xdg-'));
  return true;
}
