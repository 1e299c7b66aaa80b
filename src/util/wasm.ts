/**
 * A WebAssembly module from its committed base64 bytes (tools/build-wasm.mjs), instantiated on
 * first use: the returned function gives its exports, or null where this runtime cannot run it.
 */
export function lazyWasm<Exports>(base64: string): () => Exports | null {
  let exports: Exports | null | undefined;
  return () => {
    if (exports === undefined) {
      const bytes = Buffer.from(base64, 'base64');
      exports = WebAssembly.validate(bytes) ? (new WebAssembly.Instance(new WebAssembly.Module(bytes)).exports as unknown as Exports) : null;
    }
    return exports;
  };
}
