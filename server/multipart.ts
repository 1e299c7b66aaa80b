/**
 * A small multipart/form-data reader for POST /v1/generate: parts are views of the body, keyed
 * by their form name. Enough for the documented fields (request, depth, init, layout).
 */
import { DepthcastError } from '../src/errors.ts';

export interface Part {
  data: Buffer;
  filename?: string;
  contentType?: string;
}

export function parseMultipart(body: Buffer, contentType: string): Map<string, Part> {
  const boundary = /boundary=(?:"([^"]+)"|([^;]+))/i.exec(contentType);
  if (!boundary) throw new DepthcastError('BAD_REQUEST', 'multipart/form-data without a boundary');
  const delimiter = Buffer.from(`--${boundary[1] ?? boundary[2]!.trim()}`);
  const parts = new Map<string, Part>();
  let pos = body.indexOf(delimiter);
  if (pos < 0) throw new DepthcastError('BAD_REQUEST', 'multipart body does not contain its boundary');
  for (;;) {
    pos += delimiter.length;
    if (body[pos] === 0x2d && body[pos + 1] === 0x2d) break; // closing "--"
    const headerEnd = body.indexOf('\r\n\r\n', pos);
    if (headerEnd < 0) throw new DepthcastError('BAD_REQUEST', 'multipart part without a header end');
    const next = body.indexOf(Buffer.concat([Buffer.from('\r\n'), delimiter]), headerEnd + 4);
    if (next < 0) throw new DepthcastError('BAD_REQUEST', 'multipart part without a closing boundary');
    const headers = body.subarray(pos, headerEnd).toString('utf8');
    const disposition = /content-disposition:[^\r\n]*?\bname="([^"]*)"(?:[^\r\n]*?\bfilename="([^"]*)")?/i.exec(headers);
    if (!disposition) throw new DepthcastError('BAD_REQUEST', 'multipart part without Content-Disposition name');
    const part: Part = { data: body.subarray(headerEnd + 4, next) };
    if (disposition[2] !== undefined) part.filename = disposition[2];
    const type = /content-type:\s*([^\r\n]+)/i.exec(headers)?.[1];
    if (type) part.contentType = type.trim();
    parts.set(disposition[1]!, part);
    pos = next + 2;
  }
  return parts;
}
