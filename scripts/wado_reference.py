#!/usr/bin/env python3
"""The reference DICOMweb client for scripts/bench-wado: dicomweb-client (PyPI) retrieves a
study by WADO-RS as it streams and writes each instance as a Part-10 file.

usage: wado_reference.py BASE_URL STUDY_UID OUT_DIR
"""
import os
import sys

from dicomweb_client.api import DICOMwebClient


def main() -> int:
    base, study, out = sys.argv[1:4]
    client = DICOMwebClient(url=base)
    count = 0
    for ds in client.iter_study(study, media_types=(("application/dicom", "*"),)):
        ds.save_as(os.path.join(out, f"{ds.SOPInstanceUID}.dcm"), enforce_file_format=True)
        count += 1
    print(count)
    return 0


if __name__ == "__main__":
    sys.exit(main())
