/**
 * Reads the WebSocket frame headers (RFC 6455, section 5.2) of what a client sends, as the
 * bytes arrive on the socket, to know whether a data message is being assembled and how many of
 * its bytes have arrived. ws parses the same bytes after us; this only follows the framing, so
 * the per-message assembly deadline and the incoming-bytes budget (server/ws.ts) need no part of
 * ws beyond its public API. Control frames (ping, pong, close) may come between the fragments of
 * a message: they neither start nor end one.
 */
const MAX_HEADER = 14;

export class FrameScanner {
  /** A data message has begun and its final fragment has not fully arrived. */
  inMessage = false;
  /** Bytes (headers and payloads) of the message being assembled that have arrived. */
  pendingBytes = 0;
  private readonly header = new Uint8Array(MAX_HEADER);
  private headerLength = 0;
  private payloadLeft = 0;
  private inPayload = false;
  private data = false;
  private fin = false;

  /** Follows one chunk; returns how many data messages it completed. */
  feed(chunk: Uint8Array): number {
    let completed = 0;
    let i = 0;
    while (i < chunk.length) {
      if (!this.inPayload) {
        this.header[this.headerLength++] = chunk[i++]!;
        const needed = this.headerBytes();
        if (this.headerLength < needed) continue;
        this.startPayload(needed);
        if (this.payloadLeft === 0 && this.endFrame()) completed++;
        continue;
      }
      const take = Math.min(this.payloadLeft, chunk.length - i);
      i += take;
      this.payloadLeft -= take;
      if (this.data) this.pendingBytes += take;
      if (this.payloadLeft === 0 && this.endFrame()) completed++;
    }
    return completed;
  }

  /** Header length so far known: 2, then with the extended length and the mask key. */
  private headerBytes(): number {
    if (this.headerLength < 2) return 2;
    const len7 = this.header[1]! & 0x7f;
    const masked = (this.header[1]! & 0x80) !== 0;
    return 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0) + (masked ? 4 : 0);
  }

  private startPayload(headerLength: number): void {
    const h = this.header;
    const len7 = h[1]! & 0x7f;
    const view = new DataView(h.buffer, h.byteOffset, h.byteLength);
    // A 64-bit length past 2^53 is not exact here, but ws refuses anything over maxPayload first.
    this.payloadLeft = len7 === 126 ? view.getUint16(2) : len7 === 127 ? Number(view.getBigUint64(2)) : len7;
    const opcode = h[0]! & 0x0f;
    this.fin = (h[0]! & 0x80) !== 0;
    this.data = opcode < 0x8;
    if (this.data) {
      this.inMessage = true;
      this.pendingBytes += headerLength;
    }
    this.inPayload = true;
  }

  /** A frame ended; true when it was the final fragment of a data message. */
  private endFrame(): boolean {
    this.inPayload = false;
    this.headerLength = 0;
    if (!this.data || !this.fin) return false;
    this.inMessage = false;
    this.pendingBytes = 0;
    return true;
  }
}
