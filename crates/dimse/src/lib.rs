//! DICOM upper layer on dicom-ul. Work in progress.
