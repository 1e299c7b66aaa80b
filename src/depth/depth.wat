;; The two full-frame passes over linear-Z depth, each in the same double-precision arithmetic
;; and order as the JavaScript it stands in for, so every value it writes is bit-identical:
;; the intake scan (src/depth/scan.ts, scanRow's zdepth branch) and linear Z → nearness
;; (src/depth/convert.ts, zdepthToNearness). Both pay at 512² and 1024² frames
;; (docs/performance.md). Assembled by tools/build-wasm.mjs into depth-wasm.ts.
(module
  ;; 36 MiB, never grown (see src/image/rgb8.ts): the nearness pass's in and out planes for the
  ;; default 4 MP depth limit; the scan's frame, grid and cell maps fit in less.
  (memory (export "memory") 576)

  ;; Depth values (f32, $width × $height, rows top-down) at $src. Counts NaN and negative values;
  ;; for each foreground value (0 <= v < far) keeps min, max, the sum (added per row, then per
  ;; frame, as scanRow does) and, with $withGrid, adds its nearness to its grid cell (f32 at
  ;; $grid + 4·(rowCell[y]·$gridWidth + colCell[x]); rowCell at $rows, colCell at $cols, i32).
  ;; Writes nan, negative, foreground, min, max, sum as f64 at $totals.
  (func (export "scanZdepth")
    (param $src i32) (param $width i32) (param $height i32) (param $near f64) (param $far f64)
    (param $invFar f64) (param $invSpan f64) (param $withGrid i32) (param $grid i32) (param $gridWidth i32)
    (param $rows i32) (param $cols i32) (param $totals i32)
    (local $y i32) (local $x i32) (local $at i32) (local $v f64) (local $n f64) (local $base i32) (local $cell i32)
    (local $nan i32) (local $negative i32) (local $foreground i32) (local $min f64) (local $max f64) (local $sum f64) (local $rowSum f64)
    (local.set $min (f64.const inf))
    (local.set $max (f64.const -inf))
    (local.set $at (local.get $src))
    (block $rowsDone
      (loop $nextRow
        (br_if $rowsDone (i32.ge_u (local.get $y) (local.get $height)))
        (if (local.get $withGrid)
          (then
            (local.set $base
              (i32.add (local.get $grid)
                (i32.shl (i32.mul (i32.load (i32.add (local.get $rows) (i32.shl (local.get $y) (i32.const 2)))) (local.get $gridWidth)) (i32.const 2))))))
        (local.set $rowSum (f64.const 0))
        (local.set $x (i32.const 0))
        (block $pixelsDone
          (loop $nextPixel
            (br_if $pixelsDone (i32.ge_u (local.get $x) (local.get $width)))
            (local.set $v (f64.promote_f32 (f32.load (local.get $at))))
            (block $done
              (if (i32.eqz (f64.ge (local.get $v) (f64.const 0)))
                (then
                  (if (f64.ne (local.get $v) (local.get $v))
                    (then (local.set $nan (i32.add (local.get $nan) (i32.const 1))))
                    (else (local.set $negative (i32.add (local.get $negative) (i32.const 1)))))
                  (br $done)))
              ;; At or beyond far, or +inf: background.
              (br_if $done (i32.eqz (f64.lt (local.get $v) (local.get $far))))
              (local.set $n
                (f64.mul
                  (f64.sub (f64.div (f64.const 1) (select (local.get $near) (local.get $v) (f64.lt (local.get $v) (local.get $near)))) (local.get $invFar))
                  (local.get $invSpan)))
              (if (f64.lt (local.get $v) (local.get $min)) (then (local.set $min (local.get $v))))
              (if (f64.gt (local.get $v) (local.get $max)) (then (local.set $max (local.get $v))))
              (local.set $rowSum (f64.add (local.get $rowSum) (local.get $v)))
              (local.set $foreground (i32.add (local.get $foreground) (i32.const 1)))
              (if (local.get $withGrid)
                (then
                  (local.set $cell
                    (i32.add (local.get $base) (i32.shl (i32.load (i32.add (local.get $cols) (i32.shl (local.get $x) (i32.const 2)))) (i32.const 2))))
                  (f32.store (local.get $cell) (f32.demote_f64 (f64.add (f64.promote_f32 (f32.load (local.get $cell))) (local.get $n)))))))
            (local.set $at (i32.add (local.get $at) (i32.const 4)))
            (local.set $x (i32.add (local.get $x) (i32.const 1)))
            (br $nextPixel)))
        (local.set $sum (f64.add (local.get $sum) (local.get $rowSum)))
        (local.set $y (i32.add (local.get $y) (i32.const 1)))
        (br $nextRow)))
    (f64.store (local.get $totals) (f64.convert_i32_u (local.get $nan)))
    (f64.store offset=8 (local.get $totals) (f64.convert_i32_u (local.get $negative)))
    (f64.store offset=16 (local.get $totals) (f64.convert_i32_u (local.get $foreground)))
    (f64.store offset=24 (local.get $totals) (local.get $min))
    (f64.store offset=32 (local.get $totals) (local.get $max))
    (f64.store offset=40 (local.get $totals) (local.get $sum)))

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
