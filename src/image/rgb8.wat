;; Decoder output (planar float32 R, G, B planes of n values each, about [-1, 1]) to interleaved
;; RGB8 with 128-bit SIMD, 16 values per iteration. Per value, in float32 as the reference
;; pipelines compute it: t = x * 0.5 + 0.5, clamped to [0, 1], times 255, rounded half to even
;; (numpy's round), then the byte; NaN gives 0. Assembled by tools/build-wasm.mjs into
;; rgb8-wasm.ts, which src/image/rgb8.ts loads.
(module
  ;; 64 MiB, never grown: room for 3.7 MP (18 bytes a pixel), and growing would detach the old
  ;; ArrayBuffer (see rgb8.ts). Pages nobody touches cost no resident memory.
  (memory (export "memory") 1024)

  ;; Pass 1: $count floats (a multiple of 16) from $src → $count bytes at $dst. The four lane
  ;; computations are written out in the loop: V8 does not inline wasm calls, and calling a
  ;; helper per 4 values cost ~0.5 ms per 512×512 image.
  (func $toBytes (param $src i32) (param $count i32) (param $dst i32)
    (local $i i32) (local $at i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $count)))
        (local.set $at (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 2))))
        (v128.store (i32.add (local.get $dst) (local.get $i))
          (i8x16.narrow_i16x8_u
            (i16x8.narrow_i32x4_s
              (i32x4.trunc_sat_f32x4_s
                (f32x4.nearest
                  (f32x4.mul
                    (f32x4.min
                      (f32x4.max
                        (f32x4.add (f32x4.mul (v128.load (local.get $at)) (v128.const f32x4 0.5 0.5 0.5 0.5)) (v128.const f32x4 0.5 0.5 0.5 0.5))
                        (v128.const f32x4 0 0 0 0))
                      (v128.const f32x4 1 1 1 1))
                    (v128.const f32x4 255 255 255 255))))
              (i32x4.trunc_sat_f32x4_s
                (f32x4.nearest
                  (f32x4.mul
                    (f32x4.min
                      (f32x4.max
                        (f32x4.add (f32x4.mul (v128.load offset=16 (local.get $at)) (v128.const f32x4 0.5 0.5 0.5 0.5)) (v128.const f32x4 0.5 0.5 0.5 0.5))
                        (v128.const f32x4 0 0 0 0))
                      (v128.const f32x4 1 1 1 1))
                    (v128.const f32x4 255 255 255 255)))))
            (i16x8.narrow_i32x4_s
              (i32x4.trunc_sat_f32x4_s
                (f32x4.nearest
                  (f32x4.mul
                    (f32x4.min
                      (f32x4.max
                        (f32x4.add (f32x4.mul (v128.load offset=32 (local.get $at)) (v128.const f32x4 0.5 0.5 0.5 0.5)) (v128.const f32x4 0.5 0.5 0.5 0.5))
                        (v128.const f32x4 0 0 0 0))
                      (v128.const f32x4 1 1 1 1))
                    (v128.const f32x4 255 255 255 255))))
              (i32x4.trunc_sat_f32x4_s
                (f32x4.nearest
                  (f32x4.mul
                    (f32x4.min
                      (f32x4.max
                        (f32x4.add (f32x4.mul (v128.load offset=48 (local.get $at)) (v128.const f32x4 0.5 0.5 0.5 0.5)) (v128.const f32x4 0.5 0.5 0.5 0.5))
                        (v128.const f32x4 0 0 0 0))
                      (v128.const f32x4 1 1 1 1))
                    (v128.const f32x4 255 255 255 255)))))))
        (local.set $i (i32.add (local.get $i) (i32.const 16)))
        (br $next))))

  ;; The first $n (a multiple of 16) pixels of planes of $size values at $src (R), then G, then B;
  ;; 3n bytes to $dst. Pass 1 writes the three byte planes after them (3n more bytes), pass 2
  ;; interleaves those.
  (func (export "planarToRgb8") (param $src i32) (param $n i32) (param $size i32) (param $dst i32)
    (local $i i32) (local $r v128) (local $g v128) (local $b v128) (local $plane i32) (local $bytes i32) (local $out i32)
    (local.set $plane (i32.shl (local.get $size) (i32.const 2)))
    (local.set $bytes (i32.add (local.get $dst) (i32.mul (local.get $n) (i32.const 3))))
    (call $toBytes (local.get $src) (local.get $n) (local.get $bytes))
    (call $toBytes (i32.add (local.get $src) (local.get $plane)) (local.get $n) (i32.add (local.get $bytes) (local.get $n)))
    (call $toBytes (i32.add (local.get $src) (i32.shl (local.get $plane) (i32.const 1))) (local.get $n) (i32.add (local.get $bytes) (i32.shl (local.get $n) (i32.const 1))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $r (v128.load (i32.add (local.get $bytes) (local.get $i))))
        (local.set $g (v128.load (i32.add (i32.add (local.get $bytes) (local.get $n)) (local.get $i))))
        (local.set $b (v128.load (i32.add (i32.add (local.get $bytes) (i32.shl (local.get $n) (i32.const 1))) (local.get $i))))
        (local.set $out (i32.add (local.get $dst) (i32.mul (local.get $i) (i32.const 3))))
        ;; r0 g0 b0 r1 g1 b1 r2 g2 b2 r3 g3 b3 r4 g4 b4 r5
        (v128.store (local.get $out)
          (i8x16.shuffle 0 1 16 3 4 17 6 7 18 9 10 19 12 13 20 15
            (i8x16.shuffle 0 16 0 1 17 0 2 18 0 3 19 0 4 20 0 5 (local.get $r) (local.get $g))
            (local.get $b)))
        ;; g5 b5 r6 g6 b6 r7 g7 b7 r8 g8 b8 r9 g9 b9 r10 g10
        (v128.store offset=16 (local.get $out)
          (i8x16.shuffle 0 21 2 3 22 5 6 23 8 9 24 11 12 25 14 15
            (i8x16.shuffle 21 0 6 22 0 7 23 0 8 24 0 9 25 0 10 26 (local.get $r) (local.get $g))
            (local.get $b)))
        ;; b10 r11 g11 b11 r12 g12 b12 r13 g13 b13 r14 g14 b14 r15 g15 b15
        (v128.store offset=32 (local.get $out)
          (i8x16.shuffle 26 1 2 27 4 5 28 7 8 29 10 11 30 13 14 31
            (i8x16.shuffle 0 11 27 0 12 28 0 13 29 0 14 30 0 15 31 0 (local.get $r) (local.get $g))
            (local.get $b)))
        (local.set $i (i32.add (local.get $i) (i32.const 16)))
        (br $next))))
)
