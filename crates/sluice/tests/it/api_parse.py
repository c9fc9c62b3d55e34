"""Parse a /metrics body (stdin) with the Prometheus project's own Python parsers.

Both the OpenMetrics parser (strict: families grouped, `# EOF` last) and the
classic text-format parser must accept it. Prints one JSON line per sample:
[name, {labels}, value]. Exits non-zero (with the parser's message) otherwise.
"""

import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse
from prometheus_client.parser import text_string_to_metric_families as text_parse

body = sys.stdin.read()
om_names = [f.name for f in om_parse(body)]
if len(om_names) != len(set(om_names)):
    sys.exit(f"a metric family appears twice: {om_names}")
for family in text_parse(body):
    for s in family.samples:
        print(json.dumps([s.name, s.labels, s.value]))
