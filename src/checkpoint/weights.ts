/**
 * Writes one ONNX model file while its weights stream in: each weight goes to disk as soon as it
 * is read (inline as a ModelProto fragment, or into `model.onnx_data` as ONNX external data when
 * the component is over the inline limit), and the graph itself is appended last. Peak memory is
 * one tensor plus the graph's nodes, whatever the model's size.
 */
import { type FileHandle, open, rm } from 'node:fs/promises';
import { endianness } from 'node:os';
import { basename, join } from 'node:path';
import { DepthcastError } from '../errors.ts';
import { type GraphBuilder, initializerChunk } from '../models/onnx-graph.ts';

/** Protobuf refuses messages over 2 GiB; components above this keep their weights outside model.onnx. */
export const DEFAULT_INLINE_LIMIT_BYTES = 2 ** 31 - 2 ** 26;
/** External data offsets are aligned so that ORT can map them. */
const EXTERNAL_ALIGN = 4096;

export class ModelFileWriter {
  private offset = 0;
  private dataOffset = 0;
  /** Float32 bytes written so far (inline or external). */
  weightBytes = 0;

  private constructor(
    readonly path: string,
    private readonly file: FileHandle,
    private readonly data: FileHandle | undefined,
    readonly dataName: string | undefined,
  ) {}

  /** `external`: the weights go to `<dir>/model.onnx_data` instead of the model file. */
  static async create(dir: string, external: boolean): Promise<ModelFileWriter> {
    if (endianness() !== 'LE') throw new DepthcastError('INTERNAL', 'the checkpoint builder writes little-endian tensors and needs a little-endian CPU');
    const path = join(dir, 'model.onnx');
    const dataPath = join(dir, 'model.onnx_data');
    await rm(dataPath, { force: true });
    const file = await open(path, 'w');
    const data = external ? await open(dataPath, 'w') : undefined;
    return new ModelFileWriter(path, file, data, external ? basename(dataPath) : undefined);
  }

  private async append(bytes: Uint8Array): Promise<void> {
    let done = 0;
    while (done < bytes.length) {
      const { bytesWritten } = await this.file.write(bytes, done, bytes.length - done, this.offset + done);
      done += bytesWritten;
    }
    this.offset += bytes.length;
  }

  /** Writes one weight (borrowed: the values are on disk when the promise settles) and declares it in `g`. */
  async put(g: GraphBuilder, name: string, dims: readonly number[], values: Float32Array): Promise<string> {
    const bytes = new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
    this.weightBytes += bytes.length;
    if (this.data) {
      const at = this.dataOffset;
      let done = 0;
      while (done < bytes.length) done += (await this.data.write(bytes, done, bytes.length - done, at + done)).bytesWritten;
      this.dataOffset = Math.ceil((at + bytes.length) / EXTERNAL_ALIGN) * EXTERNAL_ALIGN;
      await this.append(initializerChunk(name, dims, { location: this.dataName!, offset: at, length: bytes.length }));
    } else {
      await this.append(initializerChunk(name, dims, { bytes }));
    }
    return g.streamed(name);
  }

  /** Appends the graph (nodes, I/O, small constants) and closes the files. */
  async finish(graphBytes: Uint8Array): Promise<void> {
    try {
      await this.append(graphBytes);
    } finally {
      await this.file.close();
      await this.data?.close();
    }
  }

  async abort(): Promise<void> {
    await this.file.close().catch(() => {});
    await this.data?.close().catch(() => {});
  }
}
