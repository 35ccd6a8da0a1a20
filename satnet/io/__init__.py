"""satnet.io: every file satnet reads or writes, and the on-disk contracts (docs/formats.md).

- images: read_image, read_label, write_segmentation, SUPPORTED_ENDINGS, geometry_mismatch
- dataset: load_dataset_json / DatasetJson (dataset.json), check_work_dir_outside_raw
- raw_cases: RawCase, find_training_cases, find_cases_in_folder, read_case
- checks: check_dataset -> RawDataset (run before any stage writes anything)
- geometry: ImageGeometry, (Z, Y, X) order; cases: preprocessed cases; checkpoints
- workdir: the work folder's layout (WorkDir)

Import each from its module (`from satnet.io.images import read_image`), so that importing one
(`satnet.io.cases`) does not import SimpleITK.
"""
