/**
 * The part of the WebAssembly JS API that our kernels use. Node runs it, but @types/node does not
 * declare it (it lives in TypeScript's DOM library, which the Node code does not load).
 */
declare namespace WebAssembly {
  interface Memory {
    readonly buffer: ArrayBuffer;
    grow(delta: number): number;
  }
  interface Module {}
  interface Instance {
    readonly exports: Record<string, unknown>;
  }
  const Memory: { new (descriptor: { initial: number; maximum?: number }): Memory };
  const Module: { new (bytes: BufferSource): Module };
  const Instance: { new (module: Module, imports?: Record<string, Record<string, unknown>>): Instance };
  function validate(bytes: BufferSource): boolean;
}
type BufferSource = ArrayBufferView | ArrayBuffer;
