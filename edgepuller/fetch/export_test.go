package fetch

// SetSegmentSizes makes segments small enough for test blobs; the returned
// func restores the defaults.
func SetSegmentSizes(min, align int64) (restore func()) {
	m, a := minSegment, segmentAlign
	minSegment, segmentAlign = min, align
	return func() { minSegment, segmentAlign = m, a }
}
