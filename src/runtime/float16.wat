;; Bulk half <-> float32 conversion in SIMD, four values at a time, giving exactly the bits of
;; the JavaScript in float16.ts (round-to-nearest-even, subnormals, infinities, NaN as 0x7e00
;; with its sign). src/runtime/float16.ts copies chunks in and out of this memory. Assembled by
;; tools/build-wasm.mjs.
(module
  ;; 1 MiB, never grown (see src/image/rgb8.ts); float16.ts converts in chunks that fit.
  (memory (export "memory") 16)

  ;; $n halves at $src → $n float32 at $dst, $n rounded up to a multiple of 4. Each half's
  ;; exponent and mantissa, shifted into float32 position and multiplied by 2^112, is its value
  ;; (exact: normal and subnormal halves alike); exponent 31 becomes infinity or NaN instead.
  (func (export "toFloat") (param $src i32) (param $dst i32) (param $n i32)
    (local $i i32) (local $end i32) (local $h v128) (local $bits v128)
    (local.set $end (i32.and (i32.add (local.get $n) (i32.const 3)) (i32.const -4)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        (local.set $h (i32x4.extend_low_i16x8_u (v128.load64_zero (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 1))))))
        (local.set $bits (i32x4.shl (v128.and (local.get $h) (v128.const i32x4 0x7fff 0x7fff 0x7fff 0x7fff)) (i32.const 13)))
        (v128.store (i32.add (local.get $dst) (i32.shl (local.get $i) (i32.const 2)))
          (v128.or
            (i32x4.shl (v128.and (local.get $h) (v128.const i32x4 0x8000 0x8000 0x8000 0x8000)) (i32.const 16))
            (v128.bitselect
              (v128.or (local.get $bits) (v128.const i32x4 0x7f800000 0x7f800000 0x7f800000 0x7f800000))
              (f32x4.mul (local.get $bits) (v128.const i32x4 0x77800000 0x77800000 0x77800000 0x77800000))
              (i32x4.ge_u (local.get $bits) (v128.const i32x4 0x0f800000 0x0f800000 0x0f800000 0x0f800000)))))
        (local.set $i (i32.add (local.get $i) (i32.const 4)))
        (br $next))))

  ;; $n float32 at $src → $n halves at $dst, $n rounded up to a multiple of 4. Per value, on its
  ;; magnitude's bits f: normal halves (2^-14 <= |x| < 65536) rebias the exponent and round the
  ;; dropped 13 bits to nearest even by adding 0xfff plus the lowest kept bit; smaller values
  ;; are rounded by the float32 adder itself (|x| + 0.5 puts the half's subnormal mantissa in
  ;; the low bits); 65536 and above is infinity, NaN 0x7e00.
  (func (export "toHalf") (param $src i32) (param $dst i32) (param $n i32)
    (local $i i32) (local $end i32) (local $x v128) (local $f v128) (local $normal v128) (local $small v128) (local $big v128)
    (local.set $end (i32.and (i32.add (local.get $n) (i32.const 3)) (i32.const -4)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        (local.set $x (v128.load (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 2)))))
        (local.set $f (v128.and (local.get $x) (v128.const i32x4 0x7fffffff 0x7fffffff 0x7fffffff 0x7fffffff)))
        (local.set $normal
          (i32x4.shr_u
            (i32x4.add
              (i32x4.add (local.get $f) (v128.const i32x4 0xc8000fff 0xc8000fff 0xc8000fff 0xc8000fff))
              (v128.and (i32x4.shr_u (local.get $f) (i32.const 13)) (v128.const i32x4 1 1 1 1)))
            (i32.const 13)))
        (local.set $small
          (i32x4.sub
            (f32x4.add (local.get $f) (v128.const f32x4 0.5 0.5 0.5 0.5))
            (v128.const i32x4 0x3f000000 0x3f000000 0x3f000000 0x3f000000)))
        (local.set $big
          (v128.bitselect
            (v128.const i32x4 0x7e00 0x7e00 0x7e00 0x7e00)
            (v128.const i32x4 0x7c00 0x7c00 0x7c00 0x7c00)
            (i32x4.gt_u (local.get $f) (v128.const i32x4 0x7f800000 0x7f800000 0x7f800000 0x7f800000))))
        (v128.store64_lane 0 (i32.add (local.get $dst) (i32.shl (local.get $i) (i32.const 1)))
          (i16x8.narrow_i32x4_u
            (v128.or
              (i32x4.shr_u (v128.and (local.get $x) (v128.const i32x4 0x80000000 0x80000000 0x80000000 0x80000000)) (i32.const 16))
              (v128.bitselect
                (local.get $big)
                (v128.bitselect
                  (local.get $small)
                  (local.get $normal)
                  (i32x4.lt_u (local.get $f) (v128.const i32x4 0x38800000 0x38800000 0x38800000 0x38800000)))
                (i32x4.ge_u (local.get $f) (v128.const i32x4 0x47800000 0x47800000 0x47800000 0x47800000))))
            (local.get $x)))
        (local.set $i (i32.add (local.get $i) (i32.const 4)))
        (br $next))))
)
