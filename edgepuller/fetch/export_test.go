package fetch

// SetSegmentSizes makes segments small enough for test blobs; the returned
// func restores the defaults.
// Segments are then used on loopback too.
func SetSegmentSizes(min, align int64) (restore func()) {
	m, a, l := minSegment, segmentAlign, segmentLatency
	minSegment, segmentAlign, segmentLatency = min, align, 0
	return func() { minSegment, segmentAlign, segmentLatency = m, a, l }
}
