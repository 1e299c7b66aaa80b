"""Renders a static scene under a camera that pans sideways and rises between frames 1 and 2 with
Cycles (motion blur off), and writes frame 2's Z and Vector passes (raw float32 RGBA, bottom row
first) and both camera poses, for test/motion-blender.test.ts.
Usage: blender -b --factory-startup --python blender_vector_pan.py -- OUT_DIR"""
import bpy, sys, json, os, array
out = sys.argv[sys.argv.index('--') + 1]
bpy.ops.wm.read_factory_settings(use_empty=True)
sc = bpy.context.scene
sc.render.engine = 'CYCLES'
sc.cycles.samples = 4
sc.cycles.use_denoising = False
sc.cycles.filter_width = 0.01
sc.render.use_motion_blur = False
sc.render.resolution_x = 96
sc.render.resolution_y = 64
sc.render.resolution_percentage = 100
vl = sc.view_layers[0]
vl.use_pass_z = True
vl.use_pass_vector = True
def box(loc, size):
    bpy.ops.mesh.primitive_cube_add(size=1, location=loc)
    bpy.context.object.scale = size
box((-0.5, 0, -0.2), (1.4, 1.6, 1.4))
box((1.3, 0.5, -2), (1, 2.4, 1))
box((-2.5, -0.6, -3), (1, 0.8, 1))
bpy.ops.mesh.primitive_plane_add(size=40, location=(0, 0, -5))  # wall facing +Z
cam_data = bpy.data.cameras.new('cam')
cam_data.lens = 35
cam_data.sensor_width = 36
cam_data.sensor_fit = 'HORIZONTAL'
cam = bpy.data.objects.new('cam', cam_data)
sc.collection.objects.link(cam)
sc.camera = cam
cam.rotation_euler = (0.08, 0.03, 0.0)
for f, x in ((1, -0.6), (2, -0.45), (3, -0.3)):
    cam.location = (x, 0.5 + (x + 0.6) * 2, 5)
    cam.keyframe_insert('location', frame=f)
for fc in cam.animation_data.action.fcurves:
    for k in fc.keyframe_points: k.interpolation = 'LINEAR'
sc.use_nodes = True
tree = sc.node_tree
for n in list(tree.nodes): tree.nodes.remove(n)
rl = tree.nodes.new('CompositorNodeRLayers')
fo = tree.nodes.new('CompositorNodeOutputFile')
fo.base_path = out
fo.format.file_format = 'OPEN_EXR'
fo.format.color_depth = '32'
fo.file_slots.clear()
fo.file_slots.new('depth')
fo.file_slots.new('vector')
tree.links.new(rl.outputs['Depth'], fo.inputs['depth'])
tree.links.new(rl.outputs['Vector'], fo.inputs['vector'])
poses = {}
for f in (1, 2):
    sc.frame_set(f)
    poses[f] = [v for row in cam.matrix_world for v in row]
sc.frame_set(2)
bpy.ops.render.render(write_still=False)
W, H = sc.render.resolution_x, sc.render.resolution_y
for name in ('depth', 'vector'):
    img = bpy.data.images.load(os.path.join(out, f'{name}0002.exr'))
    px = array.array('f', img.pixels[:])
    with open(os.path.join(out, f'{name}.f32'), 'wb') as fh: px.tofile(fh)
fx = cam_data.lens / cam_data.sensor_width * W
json.dump({'width': W, 'height': H, 'fx': fx, 'fy': fx, 'cx': W / 2, 'cy': H / 2, 'pose': poses[2], 'previousPose': poses[1]}, open(os.path.join(out, 'camera.json'), 'w'))
print('DONE', W, H, fx)
