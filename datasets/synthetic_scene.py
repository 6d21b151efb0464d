"""Scene sampling and vectorised ray casting for the tiny world (see ``datasets.synthetic``).

World frame: y up, metres. Primitives: planes (room faces / ground), yaw-rotated boxes, spheres. Every
primitive carries a material row (two colours, pattern, scale, stripe axis, noise amplitude). Nothing here
depends on the image resolution: a scene is a function of (split, index, seed) only.
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass
from typing import Optional

import numpy as np

PLAIN, CHECKER, STRIPES, BLEND, ROAD = 0, 1, 2, 3, 4
EPS = 1e-6


@dataclass
class Scene:
    kind: str  # "indoor" | "outdoor"
    plane_n: np.ndarray  # [P,3] unit normals (into the free space)
    plane_d: np.ndarray  # [P] offsets: n.x = d
    box_c: np.ndarray  # [B,3] centres
    box_h: np.ndarray  # [B,3] half extents (local x, y, z)
    box_yaw: np.ndarray  # [B] rotation about +y
    sph_c: np.ndarray  # [S,3]
    sph_r: np.ndarray  # [S]
    mat_a: np.ndarray  # [K,3] linear RGB, K = P + B + S
    mat_b: np.ndarray  # [K,3]
    mat_pattern: np.ndarray  # [K] int
    mat_scale: np.ndarray  # [K] metres per texture period
    mat_axis: np.ndarray  # [K] int, stripe axis
    mat_amp: np.ndarray  # [K] noise amplitude
    light_dir: np.ndarray  # [3] unit, toward the light
    light_col: np.ndarray  # [3]
    ambient_col: np.ndarray  # [3]
    sky_zenith: np.ndarray  # [3]
    sky_horizon: np.ndarray  # [3]
    fog_dist: float  # metres (inf indoors)
    road_half: float
    cam_pos: np.ndarray  # [3]
    cam_R: np.ndarray  # [3,3] camera-to-world (columns: camera x right, y up, z backward)
    fov_deg: float  # vertical field of view
    noise_seed: float


def hsv(h: float, s: float, v: float) -> np.ndarray:
    """HSV in [0,1] to a linear-ish RGB triple."""
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v))


def camera_rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Camera-to-world rotation Ry(yaw) Rx(pitch) Rz(roll); the camera looks along its -z."""
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return ry @ rx @ rz


class _Builder:
    """Collects primitives and materials while a scene is sampled."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.planes, self.boxes, self.spheres = [], [], []
        self.pmat, self.bmat, self.smat = [], [], []

    def material(self, a, b=None, pattern=PLAIN, scale=1.0, axis=0, amp=0.3):
        return (np.asarray(a, float), np.asarray(a if b is None else b, float), pattern, scale, axis, amp)

    def random_material(self, sat=(0.2, 0.8), val=(0.25, 0.85), patterns=(PLAIN, CHECKER, STRIPES, BLEND)):
        r = self.rng
        h = r.uniform()
        a = hsv(h, r.uniform(*sat), r.uniform(*val))
        b = hsv((h + r.uniform(-0.25, 0.25)) % 1.0, r.uniform(*sat), r.uniform(*val))
        return self.material(a, b, int(r.choice(patterns)), r.uniform(0.08, 0.8), int(r.integers(3)), r.uniform(0.1, 0.6))

    def plane(self, n, d, mat):
        self.planes.append((np.asarray(n, float), float(d)))
        self.pmat.append(mat)

    def box(self, c, h, yaw, mat):
        self.boxes.append((np.asarray(c, float), np.asarray(h, float), float(yaw)))
        self.bmat.append(mat)

    def sphere(self, c, r, mat):
        self.spheres.append((np.asarray(c, float), float(r)))
        self.smat.append(mat)

    def build(self, **kw) -> Scene:
        mats = self.pmat + self.bmat + self.smat
        col = lambda i, dt=float: np.array([m[i] for m in mats], dt)  # noqa: E731
        return Scene(
            plane_n=np.array([p[0] for p in self.planes]).reshape(-1, 3),
            plane_d=np.array([p[1] for p in self.planes], float),
            box_c=np.array([b[0] for b in self.boxes]).reshape(-1, 3),
            box_h=np.array([b[1] for b in self.boxes]).reshape(-1, 3),
            box_yaw=np.array([b[2] for b in self.boxes], float),
            sph_c=np.array([s[0] for s in self.spheres]).reshape(-1, 3),
            sph_r=np.array([s[1] for s in self.spheres], float),
            mat_a=col(0).reshape(-1, 3), mat_b=col(1).reshape(-1, 3), mat_pattern=col(2, int),
            mat_scale=col(3), mat_axis=col(4, int), mat_amp=col(5), **kw)


def _light(r: np.random.Generator, elev_deg) -> np.ndarray:
    el, az = np.radians(r.uniform(*elev_deg)), r.uniform(0, 2 * np.pi)
    return np.array([np.cos(el) * np.cos(az), np.sin(el), np.cos(el) * np.sin(az)])


def sample_indoor(r: np.random.Generator) -> Scene:
    """A box room 3-6.5 m wide, 4-9 m deep, 2.4-3.4 m high, with furniture boxes and spheres."""
    bld = _Builder(r)
    W, D, H = r.uniform(3.0, 6.5), r.uniform(4.0, 9.0), r.uniform(2.4, 3.4)
    cam = np.array([r.uniform(0.3, 0.7) * W, r.uniform(1.0, min(1.9, H - 0.4)), D - r.uniform(0.3, 1.2)])
    floor = bld.material(hsv(r.uniform(0.0, 0.15), r.uniform(0.2, 0.7), r.uniform(0.3, 0.7)),
                         hsv(r.uniform(0.0, 0.15), r.uniform(0.2, 0.7), r.uniform(0.2, 0.6)),
                         int(r.choice([CHECKER, STRIPES, BLEND])), r.uniform(0.15, 0.6), int(r.choice([0, 2])), 0.4)
    wall_h = r.uniform()
    wall = lambda: bld.material(hsv(wall_h, r.uniform(0.05, 0.3), r.uniform(0.55, 0.9)),  # noqa: E731
                                hsv(wall_h + 0.05, r.uniform(0.05, 0.4), r.uniform(0.45, 0.85)),
                                int(r.choice([PLAIN, STRIPES, BLEND])), r.uniform(0.1, 0.5), int(r.choice([0, 1, 2])), 0.2)
    bld.plane([0, 1, 0], 0.0, floor)
    bld.plane([0, -1, 0], -H, bld.material(hsv(0.1, 0.05, 0.9), amp=0.1))
    for n, d in (([1, 0, 0], 0.0), ([-1, 0, 0], -W), ([0, 0, 1], 0.0), ([0, 0, -1], -D)):
        bld.plane(n, d, wall())
    for _ in range(int(r.integers(3, 10))):
        hx, hz = r.uniform(0.2, 1.0), r.uniform(0.2, 0.75)
        hy = r.uniform(0.15, 1.0)
        yaw = 0.0 if r.uniform() < 0.5 else r.uniform(0, np.pi)
        rad = np.hypot(hx, hz)
        if r.uniform() < 0.5:  # against a wall
            side = int(r.integers(4))
            along = r.uniform(rad, max(rad, (W if side < 2 else D) - rad))
            off = max(hx, hz) + 0.02 if yaw else (hx if side < 2 else hz) + 0.02
            x, z = [(off, along), (W - off, along), (along, off), (along, D - off)][side]
        else:
            x, z = r.uniform(rad, max(rad, W - rad)), r.uniform(rad, max(rad, D - rad))
        y = hy if r.uniform() < 0.85 else r.uniform(1.2, 2.0) + hy * 0.3  # on the floor or a wall cabinet
        hy = hy if y == hy else hy * 0.3
        if np.hypot(x - cam[0], z - cam[2]) < rad + 0.8:
            continue
        bld.box([x, y, z], [hx, hy, hz], yaw, bld.random_material())
    for _ in range(int(r.integers(1, 5))):
        rad = r.uniform(0.1, 0.5)
        x, z = r.uniform(rad, W - rad), r.uniform(rad, D - rad)
        if np.hypot(x - cam[0], z - cam[2]) < rad + 0.8:
            continue
        bld.sphere([x, rad + (r.uniform(0.4, 1.0) if r.uniform() < 0.3 else 0.0), z], rad, bld.random_material())
    yaw, pitch, roll = np.radians([r.uniform(-55, 55), r.uniform(-25, -3), r.uniform(-4, 4)])
    warm = hsv(r.uniform(0.05, 0.15), r.uniform(0.0, 0.3), 1.0)
    return bld.build(kind="indoor", light_dir=_light(r, (35, 80)), light_col=warm * r.uniform(0.6, 1.0),
                     ambient_col=warm * r.uniform(0.25, 0.45), sky_zenith=np.zeros(3), sky_horizon=np.zeros(3),
                     fog_dist=np.inf, road_half=0.0, cam_pos=cam, cam_R=camera_rotation(yaw, pitch, roll),
                     fov_deg=r.uniform(45, 70), noise_seed=r.uniform(0, 100))


def sample_outdoor(r: np.random.Generator) -> Scene:
    """A street along -z: ground, buildings on the sides, cars, trees (sphere + trunk) and bushes."""
    bld = _Builder(r)
    rw = r.uniform(3.0, 6.0)
    cam = np.array([r.uniform(-0.5, 0.5) * rw, r.uniform(1.4, 2.8), 0.0])
    grass = hsv(r.uniform(0.2, 0.35), r.uniform(0.3, 0.7), r.uniform(0.2, 0.5)) if r.uniform() < 0.6 \
        else hsv(0.1, 0.05, r.uniform(0.4, 0.7))  # grass or pavement beside the road
    bld.plane([0, 1, 0], 0.0, bld.material(hsv(0.6, 0.05, r.uniform(0.12, 0.3)), grass, ROAD, 0.3, 0, 0.5))
    far = lambda x, z: np.hypot(x - cam[0], z - cam[2]) > 3.0  # noqa: E731
    for side in (-1, 1):
        if r.uniform() < 0.25:
            continue
        z = r.uniform(-5.0, 10.0)
        for _ in range(7):
            L, gap, wid, hgt = r.uniform(8, 25), r.uniform(0, 15), r.uniform(6, 15), r.uniform(4, 25)
            z -= gap + L
            if z < -140:
                break
            x = side * (rw + r.uniform(2, 8) + wid / 2)
            bld.box([x, hgt / 2, z + L / 2], [wid / 2, hgt / 2, L / 2], r.uniform(-0.1, 0.1),
                    bld.random_material(sat=(0.05, 0.5), val=(0.25, 0.8), patterns=(CHECKER, STRIPES, BLEND, PLAIN)))
    if r.uniform() < 0.4:  # a building across the far end of the street
        z, hgt, wid = -r.uniform(60, 140), r.uniform(8, 30), r.uniform(20, 60)
        bld.box([r.uniform(-20, 20), hgt / 2, z], [wid / 2, hgt / 2, r.uniform(4, 10)], r.uniform(-0.3, 0.3),
                bld.random_material(sat=(0.05, 0.5)))
    for _ in range(int(r.integers(0, 7))):  # cars
        x = r.choice([-1, 1]) * r.uniform(0.3, 1.1) * rw
        z = -r.uniform(5, 60)
        if far(x, z):
            bld.box([x, 0.8, z], [0.9, 0.75, 2.15], r.uniform(-0.15, 0.15),
                    bld.material(hsv(r.uniform(), r.uniform(0.0, 0.9), r.uniform(0.1, 0.9)), amp=0.15))
    for _ in range(int(r.integers(2, 11))):  # trees
        rad = r.uniform(1.0, 3.0)
        x, z = r.choice([-1, 1]) * (rw + r.uniform(0.5, 3.0)), -r.uniform(3, 75)
        cy = r.uniform(2.5, 4.5) + 0.5 * rad
        if far(x, z):
            leaves = bld.material(hsv(r.uniform(0.2, 0.35), r.uniform(0.4, 0.8), r.uniform(0.15, 0.45)),
                                  hsv(r.uniform(0.15, 0.3), r.uniform(0.4, 0.8), r.uniform(0.1, 0.35)), BLEND,
                                  r.uniform(0.1, 0.4), 0, 0.6)
            bld.sphere([x, cy, z], rad, leaves)
            t = r.uniform(0.1, 0.25)
            bld.box([x, cy / 2, z], [t, cy / 2, t], 0.0, bld.material(hsv(0.08, 0.5, 0.25), amp=0.4))
    for _ in range(int(r.integers(0, 7))):  # bushes
        rad = r.uniform(0.4, 1.2)
        x, z = r.choice([-1, 1]) * (rw + r.uniform(0.3, 6.0)), -r.uniform(3, 60)
        if far(x, z):
            bld.sphere([x, rad * 0.4, z], rad, bld.material(hsv(r.uniform(0.2, 0.4), 0.6, r.uniform(0.1, 0.4)),
                                                            pattern=BLEND, scale=0.2, amp=0.5,
                                                            b=hsv(0.25, 0.5, 0.2)))
    yaw, pitch, roll = np.radians([r.uniform(-25, 25), r.uniform(-10, -1), r.uniform(-3, 3)])
    sun = hsv(r.uniform(0.05, 0.15), r.uniform(0.0, 0.25), 1.0) * r.uniform(0.8, 1.1)
    zen = hsv(r.uniform(0.55, 0.65), r.uniform(0.4, 0.8), r.uniform(0.5, 0.9))
    hor = hsv(r.uniform(0.55, 0.65), r.uniform(0.05, 0.25), r.uniform(0.8, 1.0))
    return bld.build(kind="outdoor", light_dir=_light(r, (20, 70)), light_col=sun,
                     ambient_col=hor * r.uniform(0.2, 0.4), sky_zenith=zen, sky_horizon=hor,
                     fog_dist=r.uniform(150, 400), road_half=rw, cam_pos=cam,
                     cam_R=camera_rotation(yaw, pitch, roll), fov_deg=r.uniform(45, 70),
                     noise_seed=r.uniform(0, 100))


def sample_scene(rng: np.random.Generator, kind: str) -> Scene:
    return sample_indoor(rng) if kind == "indoor" else sample_outdoor(rng)


# ---------------------------------------------------------------------------------------------- ray casting


def _bounds(s: Scene) -> tuple[np.ndarray, np.ndarray]:
    """Bounding spheres (centres [Q,3], radii [Q]) of the boxes then the spheres."""
    return np.concatenate([s.box_c, s.sph_c]), np.concatenate([np.linalg.norm(s.box_h, axis=1), s.sph_r])


def _candidates(s: Scene, o: np.ndarray, d: np.ndarray, group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ray, object) pairs to test exactly, by culling whole ray groups (image tiles) with bounding volumes.

    Rays share one origin (camera rays: a group is a cone) or one direction (shadow rays toward a
    directional light: a group is a cylinder along the light); objects are bounded by spheres.
    """
    bc, br = _bounds(s)
    g_ids, group = np.unique(group, return_inverse=True)
    G = len(g_ids)
    order = np.argsort(group, kind="stable")
    counts = np.bincount(group, minlength=G)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    if o.shape[0] == 1:  # camera rays
        dn = d / np.linalg.norm(d, axis=1, keepdims=True)
        cen = np.stack([np.bincount(group, dn[:, j], G) for j in range(3)], 1)
        cen /= np.linalg.norm(cen, axis=1, keepdims=True)
        half = np.arccos(np.clip(np.minimum.reduceat(np.einsum("nj,nj->n", dn, cen[group])[order], starts), -1, 1))
        oc = bc - o[0]
        dist = np.linalg.norm(oc, axis=1)
        obj = np.where(dist > br, np.arcsin(np.clip(br / np.maximum(dist, 1e-9), 0, 1)), np.pi)
        ang = np.arccos(np.clip(cen @ oc.T / np.maximum(dist, 1e-9), -1, 1))
        mask = ang <= half[:, None] + obj + 1e-6
    else:  # parallel shadow rays
        L = d[0] / np.linalg.norm(d[0])
        e1 = np.cross(L, [0.0, 0.0, 1.0] if abs(L[2]) < 0.9 else [1.0, 0.0, 0.0])
        e1 /= np.linalg.norm(e1)
        E = np.stack([e1, np.cross(L, e1), L], 1)
        po, pc = o @ E, bc @ E
        cen = np.stack([np.bincount(group, po[:, j], G) for j in range(2)], 1) / counts[:, None]
        rad = np.maximum.reduceat(np.linalg.norm(po[:, :2] - cen[group], axis=1)[order], starts)
        low = np.minimum.reduceat(po[order, 2], starts)
        dist = np.sqrt(((cen[:, None, :] - pc[None, :, :2]) ** 2).sum(-1))
        mask = (dist <= rad[:, None] + br + 1e-6) & (low[:, None] < pc[:, 2] + br)
    pg, pq = np.nonzero(mask)
    c = counts[pg]
    rep = np.repeat(np.arange(len(pg)), c)
    within = np.arange(c.sum()) - np.repeat(np.cumsum(c) - c, c)
    return order[starts[pg][rep] + within], pq[rep]


def _hit_boxes(s: Scene, o: np.ndarray, d: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Slab test of rays (o [M|1,3], d [M,3]) against boxes k [M]; entry parameter or inf."""
    c, sn, h = np.cos(s.box_yaw[k]), np.sin(s.box_yaw[k]), s.box_h[k]
    q = o - s.box_c[k]
    lo = (c * q[:, 0] + sn * q[:, 2], q[:, 1], -sn * q[:, 0] + c * q[:, 2])
    ld = (c * d[:, 0] + sn * d[:, 2], d[:, 1], -sn * d[:, 0] + c * d[:, 2])
    tn, tf = np.full(len(k), -np.inf), np.full(len(k), np.inf)
    for a in range(3):
        inv = 1.0 / np.where(np.abs(ld[a]) < 1e-12, 1e-12, ld[a])
        t1, t2 = (-h[:, a] - lo[a]) * inv, (h[:, a] - lo[a]) * inv
        tn, tf = np.maximum(tn, np.minimum(t1, t2)), np.minimum(tf, np.maximum(t1, t2))
    return np.where((tn <= tf) & (tn > EPS), tn, np.inf)


def _hit_spheres(s: Scene, o: np.ndarray, d: np.ndarray, k: np.ndarray) -> np.ndarray:
    oc = o - s.sph_c[k]
    a, b = np.einsum("nj,nj->n", d, d), np.einsum("nj,nj->n", d, oc)
    disc = b * b - a * (np.einsum("nj,nj->n", oc, oc) - s.sph_r[k] ** 2)
    t = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
    return np.where((disc >= 0) & (t > EPS), t, np.inf)


def intersect(s: Scene, o: np.ndarray, d: np.ndarray, group: Optional[np.ndarray] = None, planes: bool = True,
              any_hit: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit (t [N], primitive index [N]; inf and -1 on a miss) of rays o + t d, d [N,3].

    o is either one origin [1,3] (camera rays) or [N,3] with one common direction for all rays (shadow rays).
    ``group`` [N] ints bundle neighbouring rays (image tiles) for culling; default: runs of 16 rays.
    With ``any_hit`` t is 1 where any object is hit (index -1). Planes are skipped unless ``planes``.
    """
    n, P, B = len(d), len(s.plane_d), len(s.box_yaw)
    Q = B + len(s.sph_r)
    t, idx = np.full(n, np.inf), np.full(n, -1)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if planes and P:
            T = (s.plane_d - o @ s.plane_n.T) / (d @ s.plane_n.T)
            T = np.where(T > EPS, T, np.inf)
            idx = np.argmin(T, axis=1)
            t = T[np.arange(n), idx]
            idx = np.where(np.isfinite(t), idx, -1)
        if Q and n:
            ray, q = _candidates(s, o, d, np.arange(n) // 16 if group is None else group)
            tq = np.full(len(q), np.inf)
            for m, fn, off in ((q < B, _hit_boxes, 0), (q >= B, _hit_spheres, B)):
                if m.any():
                    r = ray[m]
                    tq[m] = fn(s, o if o.shape[0] == 1 else o[r], d[r], q[m] - off)
            if any_hit:
                t = np.full(n, np.inf)
                t[ray[np.isfinite(tq)]] = 1.0
                return t, np.full(n, -1)
            np.minimum.at(t, ray, tq)
            win = np.isfinite(tq) & (tq == t[ray])
            idx[ray[win]] = q[win] + P
    return t, idx


def surface(s: Scene, p: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World normals [N,3] and texture coordinates [N,3] at hit points p of primitives idx (all hits)."""
    P, B = len(s.plane_d), len(s.box_yaw)
    n, tex = np.zeros_like(p), p.copy()
    m = idx < P
    n[m] = s.plane_n[idx[m]]
    m = (idx >= P) & (idx < P + B)
    if m.any():
        k = idx[m] - P
        c, sn = np.cos(s.box_yaw[k]), np.sin(s.box_yaw[k])
        q = p[m] - s.box_c[k]
        loc = np.stack([c * q[:, 0] + sn * q[:, 2], q[:, 1], -sn * q[:, 0] + c * q[:, 2]], 1)
        ax = np.argmax(np.abs(loc) / s.box_h[k], axis=1)
        ln = np.zeros_like(loc)
        ln[np.arange(len(k)), ax] = np.sign(loc[np.arange(len(k)), ax])
        n[m] = np.stack([c * ln[:, 0] - sn * ln[:, 2], ln[:, 1], sn * ln[:, 0] + c * ln[:, 2]], 1)
        tex[m] = loc + s.box_h[k] + 7.31 * k[:, None]
    m = idx >= P + B
    if m.any():
        k = idx[m] - P - B
        q = p[m] - s.sph_c[k]
        n[m] = q / s.sph_r[k, None]
        tex[m] = q + 5.17 * k[:, None]
    return n, tex
