module fastdtm.local/k8s-pause

go 1.21
