module fastdtm/bench/loadgen

go 1.22
