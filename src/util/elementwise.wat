;; The per-step elementwise passes of the schedulers and of classifier-free guidance, two values
;; at a time in f64x2 SIMD: each float32 is widened to double, combined in the same operations
;; and order as the JavaScript loop it replaces, and rounded once to float32 on the store, so
;; every value written is the JavaScript loop's, bit for bit (wasm never fuses a multiply-add).
;; Arrays are slots in this module's memory (src/util/elementwise.ts copies them in and out);
;; $n is rounded up to an even count, so a slot holds one spare value that is computed and
;; never read back. Assembled by tools/build-wasm.mjs.
(module
  ;; 8 MiB, never grown (see src/image/rgb8.ts): 32 slots of 1024×1024's 4-channel latents
  ;; (256 KiB each), where a pass uses at most four (three inputs and the output).
  (memory (export "memory") 128)

  ;; out = cx·x + cm·m
  (func (export "lin2")
    (param $x i32) (param $m i32) (param $out i32) (param $n i32) (param $cx f64) (param $cm f64)
    (local $i i32) (local $end i32) (local $vcx v128) (local $vcm v128)
    (local.set $vcx (f64x2.splat (local.get $cx)))
    (local.set $vcm (f64x2.splat (local.get $cm)))
    (local.set $end (i32.shl (i32.and (i32.add (local.get $n) (i32.const 1)) (i32.const -2)) (i32.const 2)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        (v128.store64_lane 0 (i32.add (local.get $out) (local.get $i))
          (f32x4.demote_f64x2_zero
            (f64x2.add
              (f64x2.mul (local.get $vcx) (f64x2.promote_low_f32x4 (v128.load64_zero (i32.add (local.get $x) (local.get $i)))))
              (f64x2.mul (local.get $vcm) (f64x2.promote_low_f32x4 (v128.load64_zero (i32.add (local.get $m) (local.get $i))))))))
        (local.set $i (i32.add (local.get $i) (i32.const 8)))
        (br $next))))

  ;; out = x·s
  (func (export "scale")
    (param $x i32) (param $out i32) (param $n i32) (param $s f64)
    (local $i i32) (local $end i32) (local $vs v128)
    (local.set $vs (f64x2.splat (local.get $s)))
    (local.set $end (i32.shl (i32.and (i32.add (local.get $n) (i32.const 1)) (i32.const -2)) (i32.const 2)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        (v128.store64_lane 0 (i32.add (local.get $out) (local.get $i))
          (f32x4.demote_f64x2_zero
            (f64x2.mul (f64x2.promote_low_f32x4 (v128.load64_zero (i32.add (local.get $x) (local.get $i)))) (local.get $vs))))
        (local.set $i (i32.add (local.get $i) (i32.const 8)))
        (br $next))))

  ;; Classifier-free guidance: out = u + g·(c − u)
  (func (export "guide")
    (param $u i32) (param $c i32) (param $out i32) (param $n i32) (param $g f64)
    (local $i i32) (local $end i32) (local $vg v128) (local $vu v128)
    (local.set $vg (f64x2.splat (local.get $g)))
    (local.set $end (i32.shl (i32.and (i32.add (local.get $n) (i32.const 1)) (i32.const -2)) (i32.const 2)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        (local.set $vu (f64x2.promote_low_f32x4 (v128.load64_zero (i32.add (local.get $u) (local.get $i)))))
        (v128.store64_lane 0 (i32.add (local.get $out) (local.get $i))
          (f32x4.demote_f64x2_zero
            (f64x2.add (local.get $vu)
              (f64x2.mul (local.get $vg)
                (f64x2.sub (f64x2.promote_low_f32x4 (v128.load64_zero (i32.add (local.get $c) (local.get $i)))) (local.get $vu))))))
        (local.set $i (i32.add (local.get $i) (i32.const 8)))
        (br $next))))

  ;; Euler: x0 = cx·x + cm·m (kept in double); out = x + (x − x0)·slope
  (func (export "euler")
    (param $x i32) (param $m i32) (param $out i32) (param $n i32) (param $cx f64) (param $cm f64) (param $slope f64)
    (local $i i32) (local $end i32) (local $vcx v128) (local $vcm v128) (local $vslope v128) (local $vx v128)
    (local.set $vcx (f64x2.splat (local.get $cx)))
    (local.set $vcm (f64x2.splat (local.get $cm)))
    (local.set $vslope (f64x2.splat (local.get $slope)))
    (local.set $end (i32.shl (i32.and (i32.add (local.get $n) (i32.const 1)) (i32.const -2)) (i32.const 2)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        (local.set $vx (f64x2.promote_low_f32x4 (v128.load64_zero (i32.add (local.get $x) (local.get $i)))))
        (v128.store64_lane 0 (i32.add (local.get $out) (local.get $i))
          (f32x4.demote_f64x2_zero
            (f64x2.add (local.get $vx)
              (f64x2.mul
                (f64x2.sub (local.get $vx)
                  (f64x2.add
                    (f64x2.mul (local.get $vcx) (local.get $vx))
                    (f64x2.mul (local.get $vcm) (f64x2.promote_low_f32x4 (v128.load64_zero (i32.add (local.get $m) (local.get $i)))))))
                (local.get $vslope)))))
        (local.set $i (i32.add (local.get $i) (i32.const 8)))
        (br $next))))

  ;; Euler ancestral: x0 = cx·x + cm·m (kept in double); out = x + (x − x0)·slope + fresh·up
  (func (export "ancestral")
    (param $x i32) (param $m i32) (param $fresh i32) (param $out i32) (param $n i32)
    (param $cx f64) (param $cm f64) (param $slope f64) (param $up f64)
    (local $i i32) (local $end i32) (local $vcx v128) (local $vcm v128) (local $vslope v128) (local $vup v128) (local $vx v128)
    (local.set $vcx (f64x2.splat (local.get $cx)))
    (local.set $vcm (f64x2.splat (local.get $cm)))
    (local.set $vslope (f64x2.splat (local.get $slope)))
    (local.set $vup (f64x2.splat (local.get $up)))
    (local.set $end (i32.shl (i32.and (i32.add (local.get $n) (i32.const 1)) (i32.const -2)) (i32.const 2)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        (local.set $vx (f64x2.promote_low_f32x4 (v128.load64_zero (i32.add (local.get $x) (local.get $i)))))
        (v128.store64_lane 0 (i32.add (local.get $out) (local.get $i))
          (f32x4.demote_f64x2_zero
            (f64x2.add
              (f64x2.add (local.get $vx)
                (f64x2.mul
                  (f64x2.sub (local.get $vx)
                    (f64x2.add
                      (f64x2.mul (local.get $vcx) (local.get $vx))
                      (f64x2.mul (local.get $vcm) (f64x2.promote_low_f32x4 (v128.load64_zero (i32.add (local.get $m) (local.get $i)))))))
                  (local.get $vslope)))
              (f64x2.mul (f64x2.promote_low_f32x4 (v128.load64_zero (i32.add (local.get $fresh) (local.get $i)))) (local.get $vup)))))
        (local.set $i (i32.add (local.get $i) (i32.const 8)))
        (br $next))))

  ;; DPM-Solver++ second order: out = keep·x + d0·m0 + d1·(m0 − m1)
  (func (export "secondOrder")
    (param $x i32) (param $m0 i32) (param $m1 i32) (param $out i32) (param $n i32)
    (param $keep f64) (param $d0 f64) (param $d1 f64)
    (local $i i32) (local $end i32) (local $vkeep v128) (local $vd0 v128) (local $vd1 v128) (local $vm0 v128)
    (local.set $vkeep (f64x2.splat (local.get $keep)))
    (local.set $vd0 (f64x2.splat (local.get $d0)))
    (local.set $vd1 (f64x2.splat (local.get $d1)))
    (local.set $end (i32.shl (i32.and (i32.add (local.get $n) (i32.const 1)) (i32.const -2)) (i32.const 2)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        (local.set $vm0 (f64x2.promote_low_f32x4 (v128.load64_zero (i32.add (local.get $m0) (local.get $i)))))
        (v128.store64_lane 0 (i32.add (local.get $out) (local.get $i))
          (f32x4.demote_f64x2_zero
            (f64x2.add
              (f64x2.add
                (f64x2.mul (local.get $vkeep) (f64x2.promote_low_f32x4 (v128.load64_zero (i32.add (local.get $x) (local.get $i)))))
                (f64x2.mul (local.get $vd0) (local.get $vm0)))
              (f64x2.mul (local.get $vd1)
                (f64x2.sub (local.get $vm0) (f64x2.promote_low_f32x4 (v128.load64_zero (i32.add (local.get $m1) (local.get $i)))))))))
        (local.set $i (i32.add (local.get $i) (i32.const 8)))
        (br $next))))

  ;; LCM between steps: d = cOut·x0 + cSkip·x (kept in double); out = keep·d + add·fresh
  (func (export "lcmNoisy")
    (param $x0 i32) (param $x i32) (param $fresh i32) (param $out i32) (param $n i32)
    (param $cOut f64) (param $cSkip f64) (param $keep f64) (param $add f64)
    (local $i i32) (local $end i32) (local $vcOut v128) (local $vcSkip v128) (local $vkeep v128) (local $vadd v128)
    (local.set $vcOut (f64x2.splat (local.get $cOut)))
    (local.set $vcSkip (f64x2.splat (local.get $cSkip)))
    (local.set $vkeep (f64x2.splat (local.get $keep)))
    (local.set $vadd (f64x2.splat (local.get $add)))
    (local.set $end (i32.shl (i32.and (i32.add (local.get $n) (i32.const 1)) (i32.const -2)) (i32.const 2)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        (v128.store64_lane 0 (i32.add (local.get $out) (local.get $i))
          (f32x4.demote_f64x2_zero
            (f64x2.add
              (f64x2.mul (local.get $vkeep)
                (f64x2.add
                  (f64x2.mul (local.get $vcOut) (f64x2.promote_low_f32x4 (v128.load64_zero (i32.add (local.get $x0) (local.get $i)))))
                  (f64x2.mul (local.get $vcSkip) (f64x2.promote_low_f32x4 (v128.load64_zero (i32.add (local.get $x) (local.get $i)))))))
              (f64x2.mul (local.get $vadd) (f64x2.promote_low_f32x4 (v128.load64_zero (i32.add (local.get $fresh) (local.get $i))))))))
        (local.set $i (i32.add (local.get $i) (i32.const 8)))
        (br $next))))
)
