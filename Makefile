# The two commands of the README.
.PHONY: setup test doctor clean-venv

setup:
	bash scripts/setup.sh

test:
	bash scripts/run_tests.sh

doctor:
	.venv/bin/mtcnn-caffe doctor

clean-venv:
	rm -rf .venv
