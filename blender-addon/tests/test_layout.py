import unittest

import _path  # noqa: F401
from core import layout as L


class LayoutTest(unittest.TestCase):
    def test_bboxes_and_unknown_ids(self):
        # 5x3 map, top-down: id 1 is a 2x2 block, id 2 one pixel, id 9 unknown -> background
        vals = [0, 1, 1, 0, 0,
                0, 1, 1, 0, 9,
                2.0001, 0, 0, 0, 0]
        entries = {1: L.LayoutEntry(1, "Cube", "a red cube", 2.0), 2: L.LayoutEntry(2, "Plane", None), 3: L.LayoutEntry(3, "Hidden")}
        index, objects = L.build_layout(vals, 5, 3, entries)
        self.assertEqual(list(index), [0, 1, 1, 0, 0, 0, 1, 1, 0, 0, 2, 0, 0, 0, 0])
        self.assertEqual(L.wire_objects(objects), [
            {"id": 1, "label": "Cube", "prompt": "a red cube", "weight": 2.0, "bbox": [1, 0, 3, 2]},
            {"id": 2, "label": "Plane", "weight": 1.0, "bbox": [0, 2, 1, 3]},
        ])
        self.assertEqual(objects[0]["area"], 4)

    def test_cleaning(self):
        self.assertIsNone(L.clean_prompt("   "))
        self.assertEqual(L.clean_prompt(" x "), "x")
        self.assertEqual(L.clean_weight("junk"), 1.0)
        self.assertEqual(L.clean_weight(50), 10.0)
        self.assertEqual(L.clean_weight(-1), 0.0)
        self.assertEqual(L.clean_weight(float("nan")), 1.0)
        self.assertEqual(L.clean_label(""), "object")
        self.assertEqual(len(L.clean_label("n" * 500)), 200)

    def test_max_objects_keeps_largest(self):
        vals = [1, 1, 1, 2, 2, 3]
        entries = {i: L.LayoutEntry(i, "o%d" % i) for i in (1, 2, 3)}
        index, objects = L.build_layout(vals, 6, 1, entries, max_objects=2)
        self.assertEqual([o["id"] for o in objects], [1, 2])
        self.assertEqual(list(index), [1, 1, 1, 2, 2, 0])


if __name__ == "__main__":
    unittest.main()
