// Package synth generates deterministic, realistic, linked FHIR R4 test
// data: patients with their encounters, conditions, observations,
// medication requests, procedures, immunizations, allergies, diagnostic
// reports and documents (with base64 attachments), plus the practitioners
// and organizations they reference.
//
// The same Options always give the same bytes. Generation streams: memory
// does not grow with the number of patients, so a million resources are
// produced in a few seconds with a few MB of memory. Every resource passes
// the fhir package's Validator, and every reference resolves inside the
// generated set.
package synth

import (
	"fmt"
	"math/rand/v2"
	"strconv"
)

// Options chooses the data set.
type Options struct {
	Patients int    // number of patients (at least 1)
	Seed     uint64 // same seed, same bytes
}

// Resource is one generated resource. JSON is compact R4 JSON. Refs use
// "Type/id" in NDJSON mode and "urn:uuid:<id>" in Bundle mode.
type Resource struct {
	Type    string
	ID      string
	JSON    []byte
	Patient int // index of the patient it belongs to; -1 for shared resources
}

// Types lists the generated resource types in the order of the NDJSON files.
var Types = []string{
	"Organization", "Practitioner", "Patient", "Encounter", "Condition", "Observation",
	"MedicationRequest", "Procedure", "Immunization", "AllergyIntolerance",
	"DiagnosticReport", "DocumentReference",
}

// Counts of the shared pool for a number of patients.
func orgCount(patients int) int   { return 1 + patients/200 }
func practCount(patients int) int { return 1 + patients/25 }

type gen struct {
	o      Options
	urn    bool // references as urn:uuid (transaction Bundles)
	buf    []byte
	emit   func(Resource) error
	pIndex int
}

func newRand(seed uint64, stream uint64) *rand.Rand {
	return rand.New(rand.NewPCG(seed, stream*0x9E3779B97F4A7C15+1))
}

// uuid returns a version-4-shaped UUID drawn from r.
func uuid(r *rand.Rand) string {
	a, b := r.Uint64(), r.Uint64()
	a = (a &^ (0xF << 12)) | (4 << 12)
	b = (b &^ (0x3 << 62)) | (0x2 << 62)
	return fmt.Sprintf("%08x-%04x-%04x-%04x-%012x", a>>32, (a>>16)&0xFFFF, a&0xFFFF, b>>48, b&0xFFFFFFFFFFFF)
}

// sharedID gives the deterministic id of the i-th organization or practitioner.
func sharedID(seed uint64, kind string, i int) string {
	var k uint64 = 1
	if kind == "Practitioner" {
		k = 2
	}
	return uuid(newRand(seed, k<<40|uint64(i)))
}

func (g *gen) ref(t, id string) string {
	if g.urn && t != "Organization" && t != "Practitioner" {
		return "urn:uuid:" + id
	}
	return t + "/" + id
}

// Generate calls emit for every resource: first the organizations and
// practitioners, then each patient with everything that belongs to it.
// With urnRefs, references between a patient's resources are urn:uuid:
// (as in transaction Bundles); shared resources are always Type/id.
func Generate(o Options, urnRefs bool, emit func(Resource) error) error {
	if o.Patients < 1 {
		return fmt.Errorf("synth: Patients must be at least 1")
	}
	g := &gen{o: o, urn: urnRefs, emit: emit}
	for i := 0; i < orgCount(o.Patients); i++ {
		if err := g.organization(i); err != nil {
			return err
		}
	}
	for i := 0; i < practCount(o.Patients); i++ {
		if err := g.practitioner(i); err != nil {
			return err
		}
	}
	return GeneratePatients(o, urnRefs, 0, o.Patients, emit)
}

// GeneratePatients emits the resources of patients [from, to) only.
func GeneratePatients(o Options, urnRefs bool, from, to int, emit func(Resource) error) error {
	g := &gen{o: o, urn: urnRefs, emit: emit}
	for p := from; p < to; p++ {
		if err := g.patient(p); err != nil {
			return err
		}
	}
	return nil
}

func (g *gen) out(t, id string) error {
	return g.emit(Resource{Type: t, ID: id, JSON: g.buf, Patient: g.pIndex})
}

// jstr appends s as a JSON string. Generated strings are plain ASCII, but
// quoting stays correct for anything.
func jstr(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, `\u00`...)
			b = append(b, "0123456789abcdef"[c>>4], "0123456789abcdef"[c&15])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

func pick[T any](r *rand.Rand, xs []T) T { return xs[r.IntN(len(xs))] }

var (
	families = []string{"Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Martin", "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson", "Walker", "Young", "Allen", "King", "Wright", "Scott", "Torres", "Nguyen", "Hill", "Flores"}
	givenF   = []string{"Mary", "Patricia", "Jennifer", "Linda", "Elizabeth", "Barbara", "Susan", "Jessica", "Sarah", "Karen", "Lisa", "Nancy", "Betty", "Margaret", "Sandra", "Ashley", "Emily", "Donna", "Michelle", "Carol"}
	givenM   = []string{"James", "Robert", "John", "Michael", "David", "William", "Richard", "Joseph", "Thomas", "Charles", "Christopher", "Daniel", "Matthew", "Anthony", "Mark", "Donald", "Steven", "Paul", "Andrew", "Joshua"}
	cities   = []struct{ city, state, zip string }{{"Boston", "MA", "02108"}, {"Worcester", "MA", "01601"}, {"Springfield", "MA", "01103"}, {"Providence", "RI", "02903"}, {"Hartford", "CT", "06103"}, {"Portland", "ME", "04101"}, {"Burlington", "VT", "05401"}, {"Manchester", "NH", "03101"}}
	streets  = []string{"Main St", "Oak Ave", "Maple Dr", "Cedar Ln", "Elm St", "Pine Rd", "Washington Blvd", "Park Pl", "Lake View Rd", "Hill St"}
	orgNames = []string{"General Hospital", "Community Health Center", "Medical Group", "Family Practice", "Regional Medical Center", "Children's Clinic", "Heart Institute", "Urgent Care"}

	encTypes = []struct{ code, display, class string }{
		{"185349003", "Encounter for check up (procedure)", "AMB"},
		{"162673000", "General examination of patient (procedure)", "AMB"},
		{"50849002", "Emergency room admission (procedure)", "EMER"},
		{"32485007", "Hospital admission (procedure)", "IMP"},
		{"410620009", "Well child visit (procedure)", "AMB"},
	}
	conditions = []struct{ code, display string }{
		{"44054006", "Diabetes mellitus type 2 (disorder)"}, {"38341003", "Hypertensive disorder, systemic arterial (disorder)"},
		{"195662009", "Acute viral pharyngitis (disorder)"}, {"10509002", "Acute bronchitis (disorder)"},
		{"40055000", "Chronic sinusitis (disorder)"}, {"233604007", "Pneumonia (disorder)"},
		{"68496003", "Polyp of colon (disorder)"}, {"15777000", "Prediabetes (finding)"},
	}
	vitals = []struct {
		code, display, unit, ucum string
		lo, hi                    float64
		decimals                  int
	}{
		{"8302-2", "Body Height", "cm", "cm", 150, 195, 1},
		{"29463-7", "Body Weight", "kg", "kg", 45, 120, 1},
		{"8867-4", "Heart rate", "/min", "/min", 55, 100, 0},
		{"9279-1", "Respiratory rate", "/min", "/min", 12, 20, 0},
		{"8310-5", "Body temperature", "Cel", "Cel", 36.1, 38.5, 2},
		{"2339-0", "Glucose [Mass/volume] in Blood", "mg/dL", "mg/dL", 70, 180, 1},
		{"2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", "mg/dL", "mg/dL", 150, 260, 1},
		{"4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", "%", 4.5, 9.5, 2},
	}
	meds = []struct{ code, display string }{
		{"860975", "24 HR Metformin hydrochloride 500 MG Extended Release Oral Tablet"},
		{"314076", "lisinopril 10 MG Oral Tablet"}, {"308136", "amlodipine 2.5 MG Oral Tablet"},
		{"313782", "Acetaminophen 325 MG Oral Tablet"}, {"308182", "Amoxicillin 250 MG Oral Capsule"},
		{"197361", "Amlodipine 5 MG Oral Tablet"},
	}
	procs = []struct{ code, display string }{
		{"73761001", "Colonoscopy"}, {"430193006", "Medication Reconciliation (procedure)"},
		{"117015009", "Throat culture (procedure)"}, {"399208008", "Plain chest X-ray (procedure)"},
		{"710824005", "Assessment of health and social care needs (procedure)"},
	}
	vaccines = []struct{ code, display string }{
		{"140", "Influenza, seasonal, injectable, preservative free"}, {"08", "Hep B, adolescent or pediatric"},
		{"113", "Td (adult) preservative free"}, {"133", "Pneumococcal conjugate PCV 13"}, {"208", "SARS-COV-2 (COVID-19) vaccine, mRNA, spike protein, LNP, preservative free, 30 mcg/0.3mL dose"},
	}
	allergies = []struct{ code, display, category string }{
		{"300916003", "Latex allergy", "environment"}, {"91935009", "Allergy to peanuts", "food"},
		{"417532002", "Allergy to fish", "food"}, {"294505008", "Allergy to amoxicillin", "medication"},
		{"232350006", "House dust mite allergy", "environment"},
	}
	noteLines = []string{"Patient seen for routine follow-up.", "Vital signs reviewed and within expected range.", "Discussed diet and exercise.", "No acute distress.", "Medication list reconciled.", "Return in three months or sooner if symptoms worsen.", "Labs ordered as above.", "Patient verbalized understanding of the plan."}
)

func dateOf(day int) string {
	// days since 1940-01-01, proleptic, via a fixed table-free computation
	y, m, d := civil(day + 7305 - 10957) // shift to days since 1970-01-01
	return fmt.Sprintf("%04d-%02d-%02d", y, m, d)
}

// civil converts days since 1970-01-01 to a Gregorian date (Howard Hinnant's algorithm).
func civil(z int) (int, int, int) {
	z += 719468
	era := z / 146097
	if z < 0 && z%146097 != 0 {
		era--
	}
	doe := z - era*146097
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365
	y := yoe + era*400
	doy := doe - (365*yoe + yoe/4 - yoe/100)
	mp := (5*doy + 2) / 153
	d := doy - (153*mp+2)/5 + 1
	m := mp + 3
	if m > 12 {
		m -= 12
	}
	if m <= 2 {
		y++
	}
	return y, m, d
}

func (g *gen) organization(i int) error {
	r := newRand(g.o.Seed, 3<<40|uint64(i))
	id := sharedID(g.o.Seed, "Organization", i)
	c := pick(r, cities)
	b := append(g.buf[:0], `{"resourceType":"Organization","id":`...)
	b = jstr(b, id)
	b = append(b, `,"identifier":[{"system":"http://hl7.org/fhir/sid/us-npi","value":"`...)
	b = strconv.AppendInt(b, 1000000000+int64(r.IntN(899999999)), 10)
	b = append(b, `"}],"active":true,"type":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/organization-type","code":"prov","display":"Healthcare Provider"}]}],"name":`...)
	b = jstr(b, c.city+" "+pick(r, orgNames))
	b = append(b, `,"telecom":[{"system":"phone","value":"`...)
	b = fmt.Appendf(b, "%03d-%03d-%04d", 200+r.IntN(700), r.IntN(1000), r.IntN(10000))
	b = append(b, `"}],"address":[{"line":[`...)
	b = jstr(b, fmt.Sprintf("%d %s", 1+r.IntN(999), pick(r, streets)))
	b = fmt.Appendf(b, `],"city":"%s","state":"%s","postalCode":"%s","country":"US"}]}`, c.city, c.state, c.zip)
	g.buf = b
	g.pIndex = -1
	return g.out("Organization", id)
}

func (g *gen) practitioner(i int) error {
	r := newRand(g.o.Seed, 4<<40|uint64(i))
	id := sharedID(g.o.Seed, "Practitioner", i)
	female := r.IntN(2) == 0
	given, gender := pick(r, givenM), "male"
	if female {
		given, gender = pick(r, givenF), "female"
	}
	b := append(g.buf[:0], `{"resourceType":"Practitioner","id":`...)
	b = jstr(b, id)
	b = append(b, `,"identifier":[{"system":"http://hl7.org/fhir/sid/us-npi","value":"`...)
	b = strconv.AppendInt(b, 1000000000+int64(r.IntN(899999999)), 10)
	b = fmt.Appendf(b, `"}],"active":true,"name":[{"family":"%s","given":["%s"],"prefix":["Dr."]}],"gender":"%s"}`, pick(r, families), given, gender)
	g.buf = b
	g.pIndex = -1
	return g.out("Practitioner", id)
}
