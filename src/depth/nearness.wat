;; Linear Z → nearness (src/depth/convert.ts, zdepthToNearness) in the same double arithmetic,
;; so every float32 it writes is the JavaScript loop's: z = min(max(v, zNear), zFar), then
;; 0 for background (v >= far) or (1/z - 1/zFar) · scale. Assembled by tools/build-wasm.mjs.
(module
  ;; 36 MiB, never grown (see src/image/rgb8.ts): in and out planes for the default 4 MP limit.
  (memory (export "memory") 576)

  ;; $n f32 values at $src → $n f32 nearness values at $dst.
  (func (export "zdepthToNearness")
    (param $src i32) (param $dst i32) (param $n i32) (param $far f64) (param $zNear f64) (param $zFar f64) (param $invFar f64) (param $scale f64)
    (local $i i32) (local $v f64)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $v (f64.promote_f32 (f32.load (local.get $src))))
        (f32.store (local.get $dst)
          (f32.demote_f64
            (select
              (f64.const 0)
              (f64.mul
                (f64.sub (f64.div (f64.const 1) (f64.min (f64.max (local.get $v) (local.get $zNear)) (local.get $zFar))) (local.get $invFar))
                (local.get $scale))
              (f64.ge (local.get $v) (local.get $far)))))
        (local.set $src (i32.add (local.get $src) (i32.const 4)))
        (local.set $dst (i32.add (local.get $dst) (i32.const 4)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next))))
)
