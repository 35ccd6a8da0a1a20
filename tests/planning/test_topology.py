from __future__ import annotations

import pytest

from satnet.planning.topology import derive_topology, fit_patch_to_topology


def test_isotropic_topology_matches_nnunet_hippocampus():
    patch, topo = fit_patch_to_topology([36, 50, 35], [1.0, 1.0, 1.0])
    assert patch == [40, 56, 40]
    assert topo.strides == [[1, 1, 1]] + [[2, 2, 2]] * 3
    assert topo.features == [32, 64, 128, 256]
    assert all(k == [3, 3, 3] for k in topo.kernel_sizes)


def test_anisotropic_axis_gets_1x3x3_kernel_and_late_pooling():
    topo = derive_topology([64, 256, 256], [3.0, 0.75, 0.75])
    assert topo.kernel_sizes[0] == [1, 3, 3]
    assert topo.strides[1] == [1, 2, 2]  # Z is 4x coarser: not pooled until within 2x of in-plane
    assert topo.kernel_sizes[1] == [3, 3, 3]  # (3, 1.5, 1.5) mm: Z is now within 2x
    assert topo.strides[2] == [2, 2, 2]


def test_feature_maps_stay_at_least_4_and_features_capped():
    topo = derive_topology([128, 128, 128], [1.0, 1.0, 1.0])
    assert [128 // s for s in topo.total_stride] == [4, 4, 4]
    assert max(topo.features) == 320
    topo2 = derive_topology([512, 512], [1.0, 1.0])
    assert max(topo2.features) == 512 and len(topo2.strides) == 7


@pytest.mark.parametrize("patch", [[33, 47, 61], [7, 9, 11], [20, 20]])
def test_fitted_patch_divisible_by_total_stride(patch):
    spacing = [1.0] * len(patch)
    fitted, topo = fit_patch_to_topology(patch, spacing)
    assert all(f % s == 0 and f >= p for f, s, p in zip(fitted, topo.total_stride, patch))


def test_vnet_kernel_five():
    topo = derive_topology([32, 64, 64], [4.0, 1.0, 1.0], kernel=5)
    assert topo.kernel_sizes[0] == [1, 5, 5]


def test_a_thin_axis_that_stops_pooling_takes_no_kernel_away_from_the_others():
    # Z pools once more than Y/X can keep up with and then stops; Y and X are 2x coarser than Z by then,
    # and must keep their 3x3 (a (3, 1, 1) bottleneck convolved nothing in-plane).
    topo = derive_topology([16, 256, 256], [3.0, 1.0, 1.0])
    assert topo.strides == [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2], [1, 2, 2]]
    assert topo.kernel_sizes == [[1, 3, 3]] + [[3, 3, 3]] * 5


def test_a_thin_axis_that_stops_pooling_does_not_stop_the_others():
    # X stops at 4 voxels with spacing 2; Y and Z pool on (nnU-Net: the finest of the poolable axes)
    topo = derive_topology([128, 128, 8], [1.0, 1.0, 1.0])
    assert topo.strides == [[1, 1, 1], [2, 2, 2]] + [[2, 2, 1]] * 4
    assert topo.kernel_sizes == [[3, 3, 3]] * 6
