package fhir

import (
	"fmt"
	"strings"
)

// Version detection. The typed models cannot tell versions apart (an STU3
// Bundle parses as R4 with 2 of 28 entries failing), so a resource is
// judged DSTU2/STU3 from tells that cannot occur in valid R4:
//
//   - a resourceType that exists only before R4 (MedicationOrder, ProcedureRequest, ...);
//   - a meta.profile under a versioned spec URL (http://hl7.org/fhir/STU3/...,
//     /DSTU2/, /1.0/, /3.0/);
//   - a fhirVersion element that is not 4.0.x;
//   - a top-level element unknown in R4 that exists in DSTU2/STU3 (for
//     example Observation.context, Immunization.notGiven, Claim.organization).
//
// Pre-R4 HL7 code system URIs (http://hl7.org/fhir/v2/...) are only a hint
// (CodeOldTerminology warning): migrated R4 data still carries them.

// preR4Types are resource types removed or renamed in R4.
var preR4Types = map[string]string{
	"BodySite": "STU3", "DataElement": "STU3", "DeviceComponent": "STU3",
	"EligibilityRequest": "STU3", "EligibilityResponse": "STU3", "ExpansionProfile": "STU3",
	"ImagingManifest": "STU3", "ProcedureRequest": "STU3", "ProcessRequest": "STU3",
	"ProcessResponse": "STU3", "ReferralRequest": "STU3", "Sequence": "STU3",
	"ServiceDefinition": "STU3",
	"Conformance":       "DSTU2", "DeviceUseRequest": "DSTU2", "DiagnosticOrder": "DSTU2",
	"MedicationOrder": "DSTU2", "Order": "DSTU2", "OrderResponse": "DSTU2", "Supply": "DSTU2",
	"ImagingObjectSelection": "DSTU2",
}

type oldElem struct {
	version string // "STU3", "DSTU2" or "DSTU2/STU3"
	r4      string // what R4 uses instead, if anything
}

// preR4Elements are top-level elements that do not exist in R4 but did in
// DSTU2 or STU3. They are consulted only for elements unknown in R4.
var preR4Elements = map[string]oldElem{
	"Observation.context":               {"STU3", "encounter"},
	"Observation.comment":               {"DSTU2/STU3", "note"},
	"DiagnosticReport.context":          {"STU3", "encounter"},
	"DiagnosticReport.image":            {"DSTU2/STU3", "media"},
	"DiagnosticReport.codedDiagnosis":   {"DSTU2", "conclusionCode"},
	"DiagnosticReport.request":          {"DSTU2", "basedOn"},
	"Procedure.context":                 {"STU3", "encounter"},
	"Procedure.notDone":                 {"STU3", "status=not-done"},
	"Procedure.notPerformed":            {"DSTU2", "status=not-done"},
	"Procedure.reasonNotPerformed":      {"DSTU2", "statusReason"},
	"Condition.context":                 {"STU3", "encounter"},
	"Condition.assertedDate":            {"STU3", "recordedDate"},
	"Condition.patient":                 {"DSTU2", "subject"},
	"Condition.dateRecorded":            {"DSTU2", "recordedDate"},
	"Condition.abatementBoolean":        {"DSTU2/STU3", "clinicalStatus"},
	"Immunization.notGiven":             {"STU3", "status=not-done"},
	"Immunization.wasNotGiven":          {"DSTU2", "status=not-done"},
	"Immunization.date":                 {"DSTU2/STU3", "occurrenceDateTime"},
	"Immunization.reported":             {"DSTU2", "primarySource"},
	"Immunization.explanation":          {"DSTU2/STU3", "reasonCode/statusReason"},
	"Immunization.practitioner":         {"STU3", "performer"},
	"Immunization.requester":            {"DSTU2", ""},
	"Immunization.vaccinationProtocol":  {"DSTU2/STU3", "protocolApplied"},
	"Encounter.patient":                 {"DSTU2", "subject"},
	"Encounter.incomingReferral":        {"STU3", "basedOn"},
	"Encounter.indication":              {"DSTU2", "reasonReference"},
	"Encounter.reason":                  {"DSTU2/STU3", "reasonCode"},
	"MedicationRequest.context":         {"STU3", "encounter"},
	"MedicationRequest.definition":      {"STU3", "instantiatesCanonical"},
	"MedicationStatement.taken":         {"STU3", "status"},
	"MedicationStatement.wasNotTaken":   {"DSTU2", "status"},
	"MedicationStatement.patient":       {"DSTU2", "subject"},
	"MedicationDispense.notDone":        {"STU3", "status"},
	"AllergyIntolerance.assertedDate":   {"STU3", "recordedDate"},
	"AllergyIntolerance.substance":      {"DSTU2", "code"},
	"AllergyIntolerance.status":         {"DSTU2", "clinicalStatus"},
	"Claim.organization":                {"DSTU2/STU3", "provider"},
	"Claim.target":                      {"DSTU2", "insurer"},
	"Claim.information":                 {"STU3", "supportingInfo"},
	"Claim.employmentImpacted":          {"STU3", ""},
	"Claim.hospitalization":             {"STU3", ""},
	"ExplanationOfBenefit.organization": {"STU3", "provider"},
	"ExplanationOfBenefit.information":  {"STU3", "supportingInfo"},
	"ExplanationOfBenefit.totalCost":    {"STU3", "total"},
	"ExplanationOfBenefit.totalBenefit": {"STU3", "total"},
	"DocumentReference.class":           {"STU3", "category"},
	"DocumentReference.created":         {"DSTU2/STU3", "context.period / content"},
	"DocumentReference.indexed":         {"DSTU2/STU3", "date"},
	"CarePlan.context":                  {"STU3", "encounter"},
	"CarePlan.definition":               {"STU3", "instantiatesCanonical"},
	"CareTeam.context":                  {"STU3", "encounter"},
	"Patient.animal":                    {"DSTU2/STU3", "an extension"},
	"Patient.careProvider":              {"DSTU2", "generalPractitioner"},
	"Practitioner.practitionerRole":     {"DSTU2", "PractitionerRole resources"},
	"Goal.status":                       {"STU3", "lifecycleStatus"},
	"Medication.isBrand":                {"DSTU2/STU3", ""},
	"Medication.product":                {"DSTU2", "ingredient"},
	"Medication.package":                {"DSTU2/STU3", ""},
	"Medication.isOverTheCounter":       {"STU3", ""},
	"Medication.image":                  {"STU3", ""},
}

// versionTell reports why f looks like a pre-R4 resource, or "" if nothing
// says so. It is called for every resource, so it is cheap.
func versionTell(f *facts) (version, why string) {
	if v, ok := preR4Types[f.resourceType]; ok {
		return v, fmt.Sprintf("resourceType %q exists only in %s", f.resourceType, v)
	}
	for _, p := range f.profiles {
		for _, pre := range [...]struct{ prefix, v string }{
			{"http://hl7.org/fhir/STU3/", "STU3"}, {"http://hl7.org/fhir/3.0/", "STU3"},
			{"http://hl7.org/fhir/DSTU2/", "DSTU2"}, {"http://hl7.org/fhir/1.0/", "DSTU2"},
		} {
			if strings.HasPrefix(p, pre.prefix) {
				return pre.v, fmt.Sprintf("meta.profile %q is an %s profile", p, pre.v)
			}
		}
	}
	if v := f.fhirVersion; v != "" && !strings.HasPrefix(v, "4.0.") {
		name := "a non-R4 version"
		switch {
		case strings.HasPrefix(v, "3."):
			name = "STU3"
		case strings.HasPrefix(v, "1."):
			name = "DSTU2"
		case strings.HasPrefix(v, "4.") || strings.HasPrefix(v, "5."):
			name = "R4B/R5"
		}
		return name, fmt.Sprintf("fhirVersion is %q (%s)", v, name)
	}
	return "", ""
}

// oldElementTell looks up an element unknown in R4.
func oldElementTell(resourceType, key string) (oldElem, bool) {
	e, ok := preR4Elements[resourceType+"."+key]
	return e, ok
}

func wrongVersionMsg(version, why string) string {
	return fmt.Sprintf("looks like FHIR %s, not R4: %s. ehrport exports R4 (4.0.1) only; export from an R4 endpoint or convert the data to R4 first", version, why)
}
