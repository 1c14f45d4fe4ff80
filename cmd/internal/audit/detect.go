package audit

import (
	"bytes"
	"math"
	"regexp"
	"sync"
	"unicode/utf8"
)

// Content is what the head of an object that is not an ehrport envelope
// looks like.
type Content string

const (
	ContentFHIR    Content = "fhir-json"
	ContentJSON    Content = "json"
	ContentGzip    Content = "gzip"
	ContentPDF     Content = "pdf"
	ContentDICOM   Content = "dicom"
	ContentZip     Content = "zip"
	ContentText    Content = "text"
	ContentEmpty   Content = "empty"
	ContentUnknown Content = "unknown-high-entropy"
	ContentBinary  Content = "unknown-low-entropy"
)

// Plaintext reports whether the content is readable as it is stored.
func (c Content) Plaintext() bool {
	return c != ContentUnknown && c != ContentEmpty
}

// Compiled on first use: package init runs before every command.
var fhirMarker = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`"resourceType"\s*:\s*"[A-Z][A-Za-z]+"`) })

// classify recognises common plaintext formats by their signatures, then
// falls back to entropy: encrypted or well-compressed data is close to 8
// bits per byte, text and structured data well below.
func classify(head []byte) Content {
	if len(head) == 0 {
		return ContentEmpty
	}
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b, 0x08}): // gzip, deflate
		return ContentGzip
	case bytes.HasPrefix(head, []byte("%PDF-")):
		return ContentPDF
	case len(head) >= 132 && string(head[128:132]) == "DICM":
		return ContentDICOM
	case bytes.HasPrefix(head, []byte("PK\x03\x04")):
		return ContentZip
	}
	trimmed := bytes.TrimLeft(bytes.TrimPrefix(head, []byte("\xef\xbb\xbf")), " \t\r\n")
	// JSON must also read as text: ciphertext starts with '{' one time in 256.
	if len(trimmed) > 0 && (trimmed[0] == '{' || trimmed[0] == '[') && isText(head) {
		if fhirMarker().Match(head) {
			return ContentFHIR
		}
		return ContentJSON
	}
	if isText(head) {
		return ContentText
	}
	if Entropy(head) >= highEntropy(len(head)) {
		return ContentUnknown
	}
	return ContentBinary
}

// isText: valid UTF-8 (allowing a cut rune at the end) and mostly printable.
func isText(b []byte) bool {
	if len(b) > 3 && !utf8.Valid(b[:len(b)-3]) {
		return false
	}
	printable := 0
	for _, c := range b {
		if c >= 0x20 || c == '\n' || c == '\r' || c == '\t' {
			printable++
		}
	}
	return printable*100 >= len(b)*95
}

// Entropy is the Shannon entropy of b in bits per byte.
func Entropy(b []byte) float64 {
	if len(b) == 0 {
		return 0
	}
	var counts [256]int
	for _, c := range b {
		counts[c]++
	}
	n := float64(len(b))
	h := 0.0
	for _, c := range counts {
		if c > 0 {
			p := float64(c) / n
			h -= p * math.Log2(p)
		}
	}
	return h
}

// highEntropy is the threshold above which a sample of n bytes counts as
// random-looking. Short samples cannot reach 8 bits per byte (at most
// log2(n)), so the bar is lowered for them.
func highEntropy(n int) float64 {
	maxH := math.Min(8, math.Log2(float64(n)))
	return maxH - 0.5 - 64/float64(n)
}

// Patterns that look like patient data or plaintext digests in names,
// metadata and tags. Deliberately narrow: a false alarm on a valid export
// costs an auditor's trust as much as a miss.
var (
	ssnPattern    = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`\b\d{3}-\d{2}-\d{4}\b`) })
	emailPattern  = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}`) })
	digestPattern = sync.OnceValue(func() *regexp.Regexp {
		return regexp.MustCompile(`\b(?:[0-9a-fA-F]{64}|[0-9a-fA-F]{40}|[0-9a-fA-F]{32})\b`)
	})
	fhirRefLike = sync.OnceValue(func() *regexp.Regexp {
		return regexp.MustCompile(`\b(?:Patient|Practitioner|RelatedPerson|Person)/[A-Za-z0-9\-.]{1,64}\b`)
	})
	nameLike = sync.OnceValue(func() *regexp.Regexp {
		return regexp.MustCompile(`(?i)\b(?:birth|dob|mrn|ssn|given|family|surname|patient[-_ ]?name)\b`)
	})
)

// sensitive returns a short reason when s looks like patient data or a
// plaintext digest, or "".
func sensitive(s string, checkDigests bool) string {
	switch {
	case ssnPattern().MatchString(s):
		return "looks like a social security number"
	case emailPattern().MatchString(s):
		return "looks like an e-mail address"
	case fhirRefLike().MatchString(s):
		return "names a person resource (Type/id)"
	case nameLike().MatchString(s):
		return "names a patient attribute"
	case checkDigests && digestPattern().MatchString(s):
		return "looks like a hash, which could be a plaintext digest"
	}
	return ""
}
