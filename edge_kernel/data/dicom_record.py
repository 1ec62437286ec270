"""One DICOM instance as a record: the checks and the extraction shared by every DICOM
source (folder, DICOMweb).

Only two kinds of value are ever copied out of a pydicom object: the pixels (as float32
or float64, in [0, 1] by bits stored, or as the field's declared transforms make them:
``transforms.py``, ``preprocess.py``) and declared numeric labels. Identity (PatientID, SOPInstanceUID)
is read only to compute HMAC pseudonyms. Everything else of the header stays behind, in
particular the attributes of the DICOM PS3.15 Annex E basic application level
confidentiality profile and all free text: a label mapping that names one of
``BASIC_PROFILE_KEYWORDS``, or any attribute whose VR carries text, names, dates or UIDs
(``REFUSED_LABEL_VRS``), is refused when the source is built.

Checks are split in two so a file is decoded once, not twice: ``check`` runs at index
time on the header and the raw pixel bytes (lengths, shape, photometric, label), and
``extract`` decodes the pixels when the record is handed to a job.
"""

from __future__ import annotations

import io
import logging
import warnings
from typing import Any

import numpy as np
import pydicom
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.errors import InvalidDicomError

from jupyter_rapha.protocol.errors import BadInput

from . import preprocess
from .pseudonym import patient_pseudonym, record_pseudonym
from .registry import Dataset, FieldSpec
from .source import Skip

PIXEL_DTYPES = ("float32", "float64")
LABEL_SOURCES = ("dicom-private", "dicom-tag")
MONOCHROME = ("MONOCHROME1", "MONOCHROME2")

# pydicom's warnings and log lines quote header values ("Invalid value for VR PN:
# 'DOE^JANE'"). They must never reach a log a researcher could see, so they are dropped.
def quiet_pydicom() -> None:
    warnings.filterwarnings("ignore", module=r"pydicom(\..*)?$")
    warnings.filterwarnings("ignore", module=r"edge_kernel\.data(\..*)?$")
    logging.getLogger("pydicom").disabled = True


quiet_pydicom()

# PS3.15 Table E.1-1, basic profile: attributes that identify a patient, a person, an
# institution, a device or a time, or that carry free text. None of them ever crosses.
BASIC_PROFILE_KEYWORDS = frozenset("""
AccessionNumber AcquisitionComments AcquisitionDate AcquisitionDateTime AcquisitionDeviceProcessingDescription
AcquisitionTime AdditionalPatientHistory AdmissionID AdmittingDiagnosesCodeSequence AdmittingDiagnosesDescription
Allergies Arbitrary AuthorObserverSequence BranchOfService CassetteID CommentsOnThePerformedProcedureStep
ConcatenationUID ConfidentialityConstraintOnPatientDataDescription ContentCreatorName ContentDate ContentTime
ContrastBolusAgent ContributionDescription CountryOfResidence CurrentPatientLocation CurveDate CurveTime
CustodialOrganizationSequence DataSetTrailingPadding DerivationDescription DetectorID DeviceSerialNumber
DeviceUID DigitalSignaturesSequence DischargeDiagnosisDescription DistributionAddress DistributionName
DoseReferenceUID EthnicGroup FailedSOPInstanceUIDList FiducialUID FillerOrderNumberImagingServiceRequest
FrameComments FrameOfReferenceUID GantryID GeneratorID GraphicAnnotationSequence HumanPerformerName
HumanPerformerOrganization IconImageSequence IdentifyingComments ImageComments ImagePresentationComments
ImagingServiceRequestComments Impressions InstanceCreatorUID InstanceCreationDate InstanceCreationTime
InstitutionAddress InstitutionCodeSequence InstitutionName InstitutionalDepartmentName InsurancePlanIdentification
IntendedRecipientsOfResultsIdentificationSequence InterpretationApproverSequence InterpretationAuthor
InterpretationDiagnosisDescription InterpretationIDIssuer InterpretationRecorder InterpretationText
InterpretationTranscriber IrradiationEventUID IssuerOfAdmissionID IssuerOfPatientID LastMenstrualDate MAC
MedicalAlerts MedicalRecordLocator MilitaryRank ModifiedAttributesSequence ModifiedImageDescription
ModifyingDeviceID ModifyingDeviceManufacturer NameOfPhysiciansReadingStudy NamesOfIntendedRecipientsOfResults
Occupation OperatorIdentificationSequence OperatorsName OriginalAttributesSequence OrderCallbackPhoneNumber
OrderEnteredBy OrderEntererLocation OtherPatientIDs OtherPatientIDsSequence OtherPatientNames OverlayDate
OverlayTime ParticipantSequence PatientAddress PatientAge PatientBirthDate PatientBirthName PatientBirthTime
PatientComments PatientID PatientInsurancePlanCodeSequence PatientMotherBirthName PatientName
PatientPrimaryLanguageCodeSequence PatientReligiousPreference PatientSex PatientSexNeutered PatientSize
PatientState PatientTelephoneNumbers PatientTransportArrangements PatientWeight PerformedLocation
PerformedProcedureStepDescription PerformedProcedureStepID PerformedProcedureStepStartDate
PerformedProcedureStepStartTime PerformedStationAETitle PerformedStationName PerformingPhysicianIdentificationSequence
PerformingPhysicianName PersonAddress PersonIdentificationCodeSequence PersonName PersonTelephoneNumbers
PhysicianApprovingInterpretation PhysiciansOfRecord PhysiciansOfRecordIdentificationSequence
PhysiciansReadingStudyIdentificationSequence PlacerOrderNumberImagingServiceRequest PlateID PreMedication
PregnancyStatus ProtocolName ReasonForStudy ReferencedFrameOfReferenceUID ReferencedImageSequence
ReferencedPatientAliasSequence ReferencedPatientSequence ReferencedPerformedProcedureStepSequence
ReferencedSOPInstanceUID ReferencedStudySequence ReferringPhysicianAddress ReferringPhysicianIdentificationSequence
ReferringPhysicianName ReferringPhysicianTelephoneNumbers RegionOfResidence RelatedFrameOfReferenceUID
RequestAttributesSequence RequestedContrastAgent RequestedProcedureComments RequestedProcedureDescription
RequestedProcedureID RequestedProcedureLocation RequestingPhysician RequestingService ResponsibleOrganization
ResponsiblePerson ResultsComments ResultsDistributionListSequence ResultsIDIssuer ReviewerName
ScheduledHumanPerformersSequence
ScheduledPatientInstitutionResidence ScheduledPerformingPhysicianIdentificationSequence
ScheduledPerformingPhysicianName ScheduledProcedureStepEndDate ScheduledProcedureStepEndTime
ScheduledProcedureStepLocation ScheduledProcedureStepStartDate ScheduledProcedureStepStartTime
ScheduledStationAETitle ScheduledStationGeographicLocationCodeSequence ScheduledStationName ScheduledStudyLocation
ScheduledStudyLocationAETitle SeriesDate SeriesDescription SeriesInstanceUID SeriesTime ServiceEpisodeDescription
ServiceEpisodeID SmokingStatus SOPInstanceUID SourceImageSequence SpecialNeeds StationName StorageMediaFileSetUID
StudyComments StudyDate StudyDescription StudyID StudyIDIssuer StudyInstanceUID StudyTime
SynchronizationFrameOfReferenceUID TemplateExtensionCreatorUID TemplateExtensionOrganizationUID TextComments
TextString TimezoneOffsetFromUTC TopicAuthor TopicKeywords TopicSubject TopicTitle TransactionUID UID
VerifyingObserverIdentificationCodeSequence VerifyingObserverName VerifyingObserverSequence VerifyingOrganization
VisitComments
""".split())

# Text, names, dates, times, ages, UIDs and unknown bytes: never a label value.
REFUSED_LABEL_VRS = frozenset({"AE", "AS", "DA", "DT", "LO", "LT", "OB", "OW", "PN", "SH", "SQ", "ST", "TM",
                               "UC", "UI", "UN", "UR", "UT"})
_NATIVE_SYNTAXES = (pydicom.uid.ImplicitVRLittleEndian, pydicom.uid.ExplicitVRLittleEndian,
                    pydicom.uid.ExplicitVRBigEndian, pydicom.uid.DeflatedExplicitVRLittleEndian)


def check_specs(dataset: Dataset, specs: dict[str, FieldSpec]) -> dict[str, dict[str, Any]]:
    """Validate the granted DICOM fields; returns the label mappings by field name."""
    features = [name for name, spec in specs.items() if spec.kind != "label"]
    if len(features) > 1:
        raise BadInput("a DICOM source offers one pixel field per record")
    for name in features:
        if specs[name].kind != "feature" or specs[name].dtype not in PIXEL_DTYPES:
            raise BadInput(f"field {name}: pixels are offered as {' or '.join(PIXEL_DTYPES)}")
    return {name: label_mapping(dataset, name) for name, spec in specs.items() if spec.kind == "label"}


def label_mapping(dataset: Dataset, name: str) -> dict[str, Any]:
    mapping = dataset.labels.get(name)
    if not isinstance(mapping, dict) or mapping.get("source") not in LABEL_SOURCES:
        raise BadInput(f"label {name} needs a mapping with source one of {', '.join(LABEL_SOURCES)}")
    if mapping["source"] == "dicom-tag":
        return _public_label(name, mapping)
    if not isinstance(mapping.get("creator"), str) or not all(
            isinstance(mapping.get(k), int) for k in ("group", "element")):
        raise BadInput(f"label {name} needs creator, group and element")
    if mapping["group"] % 2 != 1 or not 0x10 <= mapping["element"] <= 0xFF:
        raise BadInput(f"label {name}: group must be odd (private) and element 0x10-0xFF")
    return mapping


def _public_label(name: str, mapping: dict[str, Any]) -> dict[str, Any]:
    keyword = mapping.get("keyword")
    tag = tag_for_keyword(keyword) if isinstance(keyword, str) else None
    if not isinstance(keyword, str) or tag is None:
        raise BadInput(f"label {name}: 'keyword' must be a DICOM attribute keyword")
    if keyword in BASIC_PROFILE_KEYWORDS or dictionary_VR(tag) in REFUSED_LABEL_VRS:
        raise BadInput(f"label {name}: {keyword} is identifying or free text (PS3.15 basic profile)")
    return mapping


def parse(data: bytes | str, *, max_bytes: int) -> pydicom.Dataset:
    """Parse a file path or bytes; every failure becomes a fixed skip reason."""
    try:
        if isinstance(data, bytes):
            if len(data) > max_bytes:
                raise Skip("file too large")
            return pydicom.dcmread(io.BytesIO(data))
        return pydicom.dcmread(data)
    except InvalidDicomError as exc:
        raise Skip("not a DICOM file") from exc
    except Skip:
        raise
    except Exception as exc:  # pydicom raises many kinds on damaged files; each one skips
        raise Skip("unreadable DICOM header") from exc


def identity(ds: pydicom.Dataset, key: bytes) -> tuple[bytes, bytes, str]:
    """(record pseudonym, patient pseudonym, patient id); the id stays in the broker."""
    patient_id, instance_uid = ds.get("PatientID"), ds.get("SOPInstanceUID")
    if not patient_id or not instance_uid:
        raise Skip("missing patient id or instance uid")
    try:
        return (record_pseudonym(key, str(patient_id), str(instance_uid)),
                patient_pseudonym(key, str(patient_id)), str(patient_id))
    except BadInput as exc:
        raise Skip("invalid patient id or instance uid") from exc


def guarded(step: Any, *args: Any) -> Any:
    """Run a check on a lazily parsed dataset: a damaged element fails only on access."""
    try:
        return step(*args)
    except Skip:
        raise
    except Exception as exc:
        raise Skip("malformed DICOM element") from exc


def check(ds: pydicom.Dataset, specs: dict[str, FieldSpec], labels: dict[str, dict[str, Any]],
          *, pixels_present: bool = True) -> None:
    """Index-time checks without decoding native pixels (their byte count is checked;
    compressed ones are decoded once). ``pixels_present=False``: ``ds`` is metadata,
    which may leave the pixel data out, and only the image's header is checked."""
    for name, spec in specs.items():
        if spec.kind == "label":
            _label(ds, labels[name], spec)
        else:
            _check_pixel_header(ds, spec, require_data=pixels_present)
            if pixels_present:
                check_pixel_bytes(ds)


def needs_pixels(ds: pydicom.Dataset, specs: dict[str, FieldSpec]) -> bool:
    """Metadata that leaves out the pixel data of a record whose image is granted (a
    PACS may omit compressed pixel data there): its pixels must be checked otherwise."""
    return "PixelData" not in ds and any(spec.kind != "label" for spec in specs.values())


def reload(data: bytes | str, *, max_bytes: int, key: bytes, specs: dict[str, FieldSpec],
           labels: dict[str, dict[str, Any]], pseudonym: bytes, fault: Exception) -> dict[str, np.ndarray]:
    """Decode a record read again during a job; raise ``fault`` if it no longer is the
    record that was indexed and counted (changed, replaced or unreadable since)."""
    try:
        ds = parse(data, max_bytes=max_bytes)
        found, _, _ = guarded(identity, ds, key)
        arrays: dict[str, np.ndarray] = guarded(extract, ds, specs, labels)
    except Skip as skip:
        raise fault from skip
    if found != pseudonym:
        raise fault
    return arrays


def extract(ds: pydicom.Dataset, specs: dict[str, FieldSpec],
            labels: dict[str, dict[str, Any]]) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for name, spec in specs.items():
        arrays[name] = _label(ds, labels[name], spec) if spec.kind == "label" else _pixels(ds, spec)
    return arrays


def _check_pixel_header(ds: pydicom.Dataset, spec: FieldSpec, *, require_data: bool = True) -> None:
    if require_data and "PixelData" not in ds:
        raise Skip("no pixel data")
    if ds.get("SamplesPerPixel", 1) != 1 or ds.get("PhotometricInterpretation") not in MONOCHROME:
        raise Skip("not a greyscale image")
    if spec.transforms:  # declared preprocessing: frames, size (or resize) and header needs
        preprocess.check_header(ds, spec)
        return
    if int(ds.get("NumberOfFrames", 1) or 1) != 1:
        raise Skip("more than one frame")
    rows, columns = ds.get("Rows"), ds.get("Columns")
    if not rows or not columns or rows * columns != int(np.prod(spec.shape)) or spec.shape[-2:] != (rows, columns):
        raise Skip("image size differs from the schema")


def check_pixel_bytes(ds: pydicom.Dataset) -> None:
    """The pixel data is all there (native) or decodes (compressed); raises ``Skip``."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax in _NATIVE_SYNTAXES:
        bits = int(ds.get("BitsAllocated", 16) or 16)
        expected = preprocess.frames_of(ds) * int(ds.Rows) * int(ds.Columns) * bits // 8
        if len(ds.PixelData) < expected:
            raise Skip("unreadable pixel data")
        return
    try:  # compressed: the only way to know it decodes is to decode it, once, here
        _ = ds.pixel_array
    except Exception as exc:
        raise Skip("unreadable pixel data") from exc


def _pixels(ds: pydicom.Dataset, spec: FieldSpec) -> np.ndarray:
    _check_pixel_header(ds, spec)
    try:
        raw = ds.pixel_array
    except Exception as exc:  # truncated or undecodable pixel data; the record is skipped
        raise Skip("unreadable pixel data") from exc
    frames = preprocess.frames_of(ds)
    if raw.shape != ((frames,) if frames > 1 else ()) + (ds.Rows, ds.Columns):
        raise Skip("unreadable pixel data")
    if spec.transforms:
        return preprocess.apply(ds, raw, spec)
    return _scaled(ds, raw).reshape(spec.shape).astype(spec.dtype, copy=False)


def _scaled(ds: pydicom.Dataset, raw: np.ndarray) -> np.ndarray:
    bits = int(ds.get("BitsStored", 0) or ds.get("BitsAllocated", 16))
    top = float(2 ** bits - 1)
    offset = float(2 ** (bits - 1)) if ds.get("PixelRepresentation", 0) == 1 else 0.0
    scaled = np.clip((raw.astype(np.float32) + offset) / np.float32(top), 0.0, 1.0)
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        scaled = 1.0 - scaled  # MONOCHROME1 shows low values as white
    return np.asarray(scaled, dtype=np.float32)


def _label(ds: pydicom.Dataset, mapping: dict[str, Any], spec: FieldSpec) -> np.ndarray:
    try:
        if mapping["source"] == "dicom-tag":
            value = ds[mapping["keyword"]].value
        else:
            value = ds.private_block(mapping["group"], mapping["creator"])[mapping["element"]].value
    except KeyError as exc:
        raise Skip("label missing") from exc
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) or value is None or value == "":
        raise Skip("label invalid")
    if isinstance(mapping.get("map"), dict):
        value = mapping["map"].get(str(value).strip())
    return numeric_label(value, spec)


def numeric_label(value: Any, spec: FieldSpec) -> np.ndarray:
    """A label value as the declared dtype and shape, or a skip."""
    if value is None or isinstance(value, bool) and not spec.dtype == "bool":
        raise Skip("label invalid")
    try:
        number = float(value) if spec.dtype.startswith("float") else int(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise Skip("label invalid") from exc
    if spec.dtype.startswith("float") and not np.isfinite(number):
        raise Skip("label invalid")
    if not spec.dtype.startswith("float") and not _fits(number, spec.dtype):
        raise Skip("label invalid")
    return np.asarray(number, dtype=spec.dtype).reshape(spec.shape)


def _fits(value: float | int, dtype: str) -> bool:
    if dtype == "bool":
        return value in (0, 1)
    info = np.iinfo(np.dtype(dtype))
    return info.min <= value <= info.max
