// Package fhir reads FHIR R4 JSON for export: it walks files and folders,
// validates every resource, and hands the exporter the original bytes,
// compacted, never re-serialised.
//
// # The record is the bytes
//
// The typed models (samply golang-fhir-models) are lossy: they drop
// unknown fields, contained resources and primitive extensions and invent
// codes on output. This package therefore uses them only to check; what it
// yields is the input with insignificant whitespace removed, with the
// semantics of encoding/json.Compact: keys keep their order, number
// literals such as 1.50 and string escapes are copied byte for byte. A
// leading UTF-8 byte order mark is dropped. All 59 HL7 R4 examples of the
// shared corpus come out byte-equal to json.Compact of their input.
//
// # Reading
//
// A Walker takes paths (files and folders, folders walked recursively in
// lexical order) and yields Items with their Position: file, NDJSON line,
// Bundle entry index. .ndjson and .ndjson.gz files give one item per
// non-blank line, lines of any length up to MaxResourceBytes. .json and
// .json.gz files hold one resource or one Bundle. A Bundle is kept whole by
// default (KindBundle) and is never held in memory: Bundle.Entries streams
// its entries for validation and Bundle.WriteTo streams the compacted
// Bundle into any io.Writer (an encrypting writer), checking it is the
// same bytes that were validated. With SplitBundles, collection,
// transaction, batch and searchset Bundles whose entries all have ids are
// yielded entry by entry, and the urn:uuid links that splitting loses are
// reported.
//
// # Checking
//
// A Validator checks one resource (see its documentation for the list).
// A Checker adds the export-wide rules: duplicate Type/id among top-level
// resources (identical content is stored once, different content is a
// finding naming both places), reference resolution (Type/id across the
// export, urn:uuid and absolute fullUrls inside a Bundle, #id in
// contained), DSTU2/STU3 rejection, and the Policy for invalid resources
// (fail, skip, quarantine). Checker.Run does the same as a loop over
// Walker.Next and Checker.Item while validating on every core.
//
// A typical exporter loop:
//
//	w, err := fhir.NewWalker(paths, fhir.WalkOptions{SplitBundles: split, Report: log})
//	c := fhir.NewChecker(fhir.CheckerOptions{Policy: policy, Report: log})
//	err = c.Run(w, 0, func(it *fhir.Item, act fhir.Action) error {
//		switch {
//		case act == fhir.Write && it.Kind == fhir.KindBundle:
//			_, err := it.Bundle.WriteTo(out) // then a newline
//			return err
//		case act == fhir.Write:
//			_, err := out.Write(it.Raw) // then a newline
//			return err
//		case act == fhir.Quarantine:
//			return quarantine(it)
//		}
//		return nil // Duplicate or Skip: counted in c.Stats()
//	})
//	if err == nil {
//		err = c.Finish() // unresolved references
//	}
//
// # Errors
//
// Every error about the input wraps ErrBadInput and names the file and the
// line or entry. Limits (line length, gzip expansion, JSON nesting) turn
// hostile input into such errors, never into panics or unbounded memory.
//
// This package must not import the project's crypto or storage packages.
package fhir
