from django.apps import AppConfig


class PipelineConfig(AppConfig):
    name = "apps.pipeline"
    verbose_name = "Autonomy pipeline"

    def ready(self):
        from apps.metrics.definitions import register_pipeline_source

        from .models import PipelineRun

        # Autonomia_pct reads the latest run through this hook, so metrics never imports the pipeline
        register_pipeline_source(PipelineRun.autonomy_record)
