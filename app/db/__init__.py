"""The farm's database: engine, schema, migrations and every SQL query of the product."""
