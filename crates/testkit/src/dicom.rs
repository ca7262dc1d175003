//! Real DICOM peers as child processes (Orthanc, dcmqrscp, storescp). Work in progress.
