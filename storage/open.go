package storage

import "fmt"

// Open returns the store a reference names: a folder, a local store named in
// the config (with the bucket as a sub-folder), or an S3 bucket.
func Open(cfg *Config, ref Ref) (Store, error) {
	if ref.IsLocal() {
		return NewLocalStore(ref.Path)
	}
	sc, err := cfg.Lookup(ref.Store)
	if err != nil {
		return nil, err
	}
	switch sc.Type {
	case "local":
		return NewLocalStore(sc.Path + "/" + ref.Bucket + "/" + ref.Prefix)
	case "s3":
		// Name the store in messages as the user wrote it.
		named := *sc
		named.Name = ref.Store
		return NewS3Store(&named, ref.Bucket, ref.Prefix)
	}
	return nil, fmt.Errorf("%w: store %q has type %q", ErrBadConfig, sc.Name, sc.Type)
}

// OpenRef parses s and opens the store it names.
func OpenRef(cfg *Config, s string) (Store, error) {
	ref, err := ParseRef(s)
	if err != nil {
		return nil, err
	}
	return Open(cfg, ref)
}
