package synth

import (
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
)

var _ = base64.StdEncoding

func coding(b []byte, system, code, display string) []byte {
	b = append(b, `{"system":`...)
	b = jstr(b, system)
	b = append(b, `,"code":`...)
	b = jstr(b, code)
	b = append(b, `,"display":`...)
	b = jstr(b, display)
	return append(b, '}')
}

func concept(b []byte, system, code, display string) []byte {
	b = append(b, `{"coding":[`...)
	b = coding(b, system, code, display)
	b = append(b, `],"text":`...)
	b = jstr(b, display)
	return append(b, '}')
}

func (g *gen) refObj(b []byte, t, id string) []byte {
	b = append(b, `{"reference":`...)
	b = jstr(b, g.ref(t, id))
	return append(b, '}')
}

// decimal formats v with exactly n decimals, keeping trailing zeros
// ("72.0", "36.50"): the export must carry such literals unchanged.
func decimal(b []byte, v float64, n int) []byte {
	return strconv.AppendFloat(b, v, 'f', n, 64)
}

func dateTime(day, minute int) string {
	return fmt.Sprintf("%sT%02d:%02d:00-05:00", dateOf(day), minute/60%24, minute%60)
}

const (
	day2015 = 27393 // 2015-01-01 in days since 1940-01-01
	span    = 3650  // ten years of care
)

type encounter struct {
	id         string
	day, start int
	pract, org string
}

func (g *gen) patient(p int) error {
	g.pIndex = p
	r := newRand(g.o.Seed, 5<<40|uint64(p))
	pid := uuid(r)
	nOrg, nPract := orgCount(g.o.Patients), practCount(g.o.Patients)
	org := sharedID(g.o.Seed, "Organization", r.IntN(nOrg))
	gp := sharedID(g.o.Seed, "Practitioner", r.IntN(nPract))
	female := r.IntN(2) == 0
	given, gender := pick(r, givenM), "male"
	if female {
		given, gender = pick(r, givenF), "female"
	}
	family := pick(r, families)
	birth := r.IntN(75 * 365)
	c := pick(r, cities)

	b := append(g.buf[:0], `{"resourceType":"Patient","id":`...)
	b = jstr(b, pid)
	b = append(b, `,"identifier":[{"type":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v2-0203","code":"MR","display":"Medical record number"}]},"system":"http://hospital.example.org/mrn","value":"`...)
	b = strconv.AppendInt(b, int64(100000+p), 10)
	b = fmt.Appendf(b, `"}],"active":true,"name":[{"use":"official","family":"%s","given":["%s"]}],"telecom":[{"system":"phone","value":"555-%04d","use":"home"}],"gender":"%s","birthDate":"%s","address":[{"line":[`,
		family, given, r.IntN(10000), gender, dateOf(birth))
	b = jstr(b, fmt.Sprintf("%d %s", 1+r.IntN(999), pick(r, streets)))
	b = fmt.Appendf(b, `],"city":"%s","state":"%s","postalCode":"%s","country":"US"}],"maritalStatus":`, c.city, c.state, c.zip)
	b = concept(b, "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", "M", "Married")
	b = append(b, `,"generalPractitioner":[`...)
	b = g.refObj(b, "Practitioner", gp)
	b = append(b, `],"managingOrganization":`...)
	b = g.refObj(b, "Organization", org)
	b = append(b, '}')
	g.buf = b
	if err := g.out("Patient", pid); err != nil {
		return err
	}

	// Allergies belong to the patient, not to an encounter.
	for i, n := 0, r.IntN(3); i < n; i++ {
		a := pick(r, allergies)
		id := uuid(r)
		b = append(g.buf[:0], `{"resourceType":"AllergyIntolerance","id":`...)
		b = jstr(b, id)
		b = append(b, `,"clinicalStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical","code":"active"}]},"verificationStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/allergyintolerance-verification","code":"confirmed"}]},"type":"allergy","category":["`...)
		b = append(b, a.category...)
		b = append(b, `"],"criticality":"low","code":`...)
		b = concept(b, "http://snomed.info/sct", a.code, a.display)
		b = append(b, `,"patient":`...)
		b = g.refObj(b, "Patient", pid)
		b = fmt.Appendf(b, `,"recordedDate":"%s"}`, dateOf(day2015+r.IntN(span)))
		g.buf = b
		if err := g.out("AllergyIntolerance", id); err != nil {
			return err
		}
	}

	nEnc := 1 + r.IntN(5)
	for e := 0; e < nEnc; e++ {
		enc := encounter{id: uuid(r), day: day2015 + r.IntN(span), start: 8*60 + r.IntN(9*60),
			pract: sharedID(g.o.Seed, "Practitioner", r.IntN(nPract)), org: org}
		if err := g.encounter(r, pid, enc); err != nil {
			return err
		}
	}
	return nil
}

func (g *gen) encounter(r *rand.Rand, pid string, e encounter) error {
	t := pick(r, encTypes)
	b := append(g.buf[:0], `{"resourceType":"Encounter","id":`...)
	b = jstr(b, e.id)
	b = fmt.Appendf(b, `,"status":"finished","class":{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"%s"},"type":[`, t.class)
	b = concept(b, "http://snomed.info/sct", t.code, t.display)
	b = append(b, `],"subject":`...)
	b = g.refObj(b, "Patient", pid)
	b = append(b, `,"participant":[{"individual":`...)
	b = g.refObj(b, "Practitioner", e.pract)
	b = fmt.Appendf(b, `}],"period":{"start":"%s","end":"%s"},"serviceProvider":`, dateTime(e.day, e.start), dateTime(e.day, e.start+30))
	b = g.refObj(b, "Organization", e.org)
	b = append(b, '}')
	g.buf = b
	if err := g.out("Encounter", e.id); err != nil {
		return err
	}
	when := dateTime(e.day, e.start+5)

	if r.IntN(3) == 0 {
		c := pick(r, conditions)
		id := uuid(r)
		b = append(g.buf[:0], `{"resourceType":"Condition","id":`...)
		b = jstr(b, id)
		b = append(b, `,"clinicalStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/condition-clinical","code":"active"}]},"verificationStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/condition-ver-status","code":"confirmed"}]},"category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/condition-category","code":"encounter-diagnosis","display":"Encounter Diagnosis"}]}],"code":`...)
		b = concept(b, "http://snomed.info/sct", c.code, c.display)
		b = append(b, `,"subject":`...)
		b = g.refObj(b, "Patient", pid)
		b = append(b, `,"encounter":`...)
		b = g.refObj(b, "Encounter", e.id)
		b = fmt.Appendf(b, `,"onsetDateTime":"%s","recordedDate":"%s"}`, when, when)
		g.buf = b
		if err := g.out("Condition", id); err != nil {
			return err
		}
	}

	var obsIDs []string
	for i, n := 0, 1+r.IntN(4); i < n; i++ {
		v := pick(r, vitals)
		id := uuid(r)
		obsIDs = append(obsIDs, id)
		cat, catDisplay := "vital-signs", "Vital signs"
		if strings.Contains(v.unit, "dL") || v.unit == "%" {
			cat, catDisplay = "laboratory", "Laboratory"
		}
		b = append(g.buf[:0], `{"resourceType":"Observation","id":`...)
		b = jstr(b, id)
		b = fmt.Appendf(b, `,"status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"%s","display":"%s"}]}],"code":`, cat, catDisplay)
		b = concept(b, "http://loinc.org", v.code, v.display)
		b = append(b, `,"subject":`...)
		b = g.refObj(b, "Patient", pid)
		b = append(b, `,"encounter":`...)
		b = g.refObj(b, "Encounter", e.id)
		b = fmt.Appendf(b, `,"effectiveDateTime":"%s","issued":"%s.000-05:00","valueQuantity":{"value":`, when, strings.TrimSuffix(when, "-05:00"))
		b = decimal(b, v.lo+r.Float64()*(v.hi-v.lo), v.decimals)
		b = fmt.Appendf(b, `,"unit":"%s","system":"http://unitsofmeasure.org","code":"%s"}}`, v.unit, v.ucum)
		g.buf = b
		if err := g.out("Observation", id); err != nil {
			return err
		}
	}

	if r.IntN(2) == 0 {
		id := uuid(r)
		b = append(g.buf[:0], `{"resourceType":"DiagnosticReport","id":`...)
		b = jstr(b, id)
		b = append(b, `,"status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v2-0074","code":"LAB","display":"Laboratory"}]}],"code":`...)
		b = concept(b, "http://loinc.org", "51990-0", "Basic metabolic panel - Blood")
		b = append(b, `,"subject":`...)
		b = g.refObj(b, "Patient", pid)
		b = append(b, `,"encounter":`...)
		b = g.refObj(b, "Encounter", e.id)
		b = fmt.Appendf(b, `,"effectiveDateTime":"%s","issued":"%s.000-05:00","performer":[`, when, strings.TrimSuffix(when, "-05:00"))
		b = g.refObj(b, "Practitioner", e.pract)
		b = append(b, `],"result":[`...)
		for i, o := range obsIDs {
			if i > 0 {
				b = append(b, ',')
			}
			b = g.refObj(b, "Observation", o)
		}
		b = append(b, `]}`...)
		g.buf = b
		if err := g.out("DiagnosticReport", id); err != nil {
			return err
		}
	}

	if r.IntN(2) == 0 {
		m := pick(r, meds)
		id := uuid(r)
		b = append(g.buf[:0], `{"resourceType":"MedicationRequest","id":`...)
		b = jstr(b, id)
		b = append(b, `,"status":"active","intent":"order","medicationCodeableConcept":`...)
		b = concept(b, "http://www.nlm.nih.gov/research/umls/rxnorm", m.code, m.display)
		b = append(b, `,"subject":`...)
		b = g.refObj(b, "Patient", pid)
		b = append(b, `,"encounter":`...)
		b = g.refObj(b, "Encounter", e.id)
		b = fmt.Appendf(b, `,"authoredOn":"%s","requester":`, when)
		b = g.refObj(b, "Practitioner", e.pract)
		b = fmt.Appendf(b, `,"dosageInstruction":[{"sequence":1,"text":"Take %d tablet(s) by mouth daily","timing":{"repeat":{"frequency":1,"period":1.0,"periodUnit":"d"}},"doseAndRate":[{"doseQuantity":{"value":%d,"unit":"tablet"}}]}]}`, 1+r.IntN(2), 1+r.IntN(2))
		g.buf = b
		if err := g.out("MedicationRequest", id); err != nil {
			return err
		}
	}

	if r.IntN(4) == 0 {
		pr := pick(r, procs)
		id := uuid(r)
		b = append(g.buf[:0], `{"resourceType":"Procedure","id":`...)
		b = jstr(b, id)
		b = append(b, `,"status":"completed","code":`...)
		b = concept(b, "http://snomed.info/sct", pr.code, pr.display)
		b = append(b, `,"subject":`...)
		b = g.refObj(b, "Patient", pid)
		b = append(b, `,"encounter":`...)
		b = g.refObj(b, "Encounter", e.id)
		b = fmt.Appendf(b, `,"performedPeriod":{"start":"%s","end":"%s"},"performer":[{"actor":`, when, dateTime(e.day, e.start+20))
		b = g.refObj(b, "Practitioner", e.pract)
		b = append(b, `}]}`...)
		g.buf = b
		if err := g.out("Procedure", id); err != nil {
			return err
		}
	}

	if r.IntN(4) == 0 {
		v := pick(r, vaccines)
		id := uuid(r)
		b = append(g.buf[:0], `{"resourceType":"Immunization","id":`...)
		b = jstr(b, id)
		b = append(b, `,"status":"completed","vaccineCode":`...)
		b = concept(b, "http://hl7.org/fhir/sid/cvx", v.code, v.display)
		b = append(b, `,"patient":`...)
		b = g.refObj(b, "Patient", pid)
		b = append(b, `,"encounter":`...)
		b = g.refObj(b, "Encounter", e.id)
		b = fmt.Appendf(b, `,"occurrenceDateTime":"%s","primarySource":true,"lotNumber":"LOT%05d"}`, when, r.IntN(100000))
		g.buf = b
		if err := g.out("Immunization", id); err != nil {
			return err
		}
	}

	if r.IntN(3) == 0 {
		id := uuid(r)
		var note strings.Builder
		for i, n := 0, 3+r.IntN(20); i < n; i++ {
			note.WriteString(pick(r, noteLines))
			note.WriteByte('\n')
		}
		data := base64.StdEncoding.EncodeToString([]byte(note.String()))
		b = append(g.buf[:0], `{"resourceType":"DocumentReference","id":`...)
		b = jstr(b, id)
		b = append(b, `,"status":"current","type":`...)
		b = concept(b, "http://loinc.org", "34117-2", "History and physical note")
		b = append(b, `,"category":[{"coding":[{"system":"http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category","code":"clinical-note","display":"Clinical Note"}]}],"subject":`...)
		b = g.refObj(b, "Patient", pid)
		b = fmt.Appendf(b, `,"date":"%s","author":[`, when)
		b = g.refObj(b, "Practitioner", e.pract)
		b = append(b, `],"content":[{"attachment":{"contentType":"text/plain; charset=utf-8","data":"`...)
		b = append(b, data...)
		b = fmt.Appendf(b, `","size":%d,"title":"Visit note"}}],"context":{"encounter":[`, note.Len())
		b = g.refObj(b, "Encounter", e.id)
		b = append(b, `]}}`...)
		g.buf = b
		if err := g.out("DocumentReference", id); err != nil {
			return err
		}
	}
	return nil
}
